/*
 * proxy_options.c — atrium-proxy's settings: the table common/settings reads
 * flags and a JSON config file with (keys are the flag names, "app-port" or
 * "app_port"; numbers may be JSON numbers or strings), the defaults, and the
 * settings every proxy needs.
 */
#include "proxy_options.h"

#include "settings.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TEXT_SETTING(flag, kind, field)                                                            \
    {                                                                                              \
        flag, kind, offsetof(proxy_options, field), sizeof(((proxy_options *)0)->field), 0, 0,     \
            NULL, NULL, NULL                                                                       \
    }
#define NUMBER_SETTING(flag, field, minimum, maximum)                                              \
    {                                                                                              \
        flag, SETTINGS_INTEGER, offsetof(proxy_options, field),                                    \
            sizeof(((proxy_options *)0)->field), minimum, maximum, NULL, NULL, NULL                \
    }

static const settings_entry settings[] = {
    TEXT_SETTING("xds", SETTINGS_ADDRESS, xds),
    TEXT_SETTING("node", SETTINGS_TEXT, node_id),
    TEXT_SETTING("service", SETTINGS_TEXT, service),
    TEXT_SETTING("namespace", SETTINGS_TEXT, namespace_name),
    NUMBER_SETTING("app-port", app_port, 1, 65535),
    NUMBER_SETTING("inbound-port", inbound_port, 1, 65535),
    NUMBER_SETTING("outbound-port", outbound_port, 1, 65535),
    NUMBER_SETTING("admin-port", admin_port, 0, 65535),
    TEXT_SETTING("admin-host", SETTINGS_TEXT, admin_host),
    NUMBER_SETTING("workers", workers, 1, 64),
    NUMBER_SETTING("request-head-timeout-ms", request_head_timeout_ms, 0, 3600000),
    NUMBER_SETTING("idle-timeout-ms", idle_timeout_ms, 0, 604800000),
    TEXT_SETTING("state-dir", SETTINGS_TEXT, state_dir),
    TEXT_SETTING("log-level", SETTINGS_LOG_LEVEL, log_level),
};

const char *proxy_options_usage(void)
{
    return "Usage: atrium-proxy --service NAME --app-port PORT [options]\n"
           "\n"
           "Atrium's data-plane proxy: runs beside one instance of a service, learns the\n"
           "mesh from atriumd over delta xDS and forwards HTTP/1.1 both ways.\n"
           "\n"
           "Options:\n"
           "  --config FILE          JSON file with any of the settings below (flags win)\n"
           "  --xds HOST:PORT        atriumd's xDS address (default 127.0.0.1:15010)\n"
           "  --node ID              this proxy's node id (default <service>-<host>-<pid>)\n"
           "  --service NAME         the service this proxy fronts (required)\n"
           "  --namespace NAME       its namespace (default \"default\")\n"
           "  --app-port PORT        where the local application listens (required)\n"
           "  --inbound-port PORT    what other services call (default 15006)\n"
           "  --outbound-port PORT   what the application calls, with Host: <service>\n"
           "                         (default 15001)\n"
           "  --admin-port PORT      /stats, /config_dump, /ready, /clusters (default 15000)\n"
           "  --admin-host HOST      the admin port's address (default 127.0.0.1)\n"
           "  --workers N            event loops sharing the listeners (default 1)\n"
           "  --request-head-timeout-ms MS\n"
           "                         a request head must arrive whole within MS of its\n"
           "                         first byte, else 408 and close (default 10000;\n"
           "                         0: no limit)\n"
           "  --idle-timeout-ms MS   close a client connection after MS without bytes\n"
           "                         moving on it or its request's upstream (default\n"
           "                         3600000 = 1 h; 0: no limit)\n"
           "  --state-dir DIR        keeps the last accepted configuration, to serve from\n"
           "                         when atriumd cannot be reached at start\n"
           "  --log-level LEVEL      debug, info (default), warn or error\n"
           "  --help                 show this text\n";
}

int proxy_options_parse(int argc, char **argv, proxy_options *out, char *error, size_t error_size)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->xds, sizeof(out->xds), "127.0.0.1:15010");
    snprintf(out->namespace_name, sizeof(out->namespace_name), "default");
    snprintf(out->admin_host, sizeof(out->admin_host), "127.0.0.1");
    snprintf(out->log_level, sizeof(out->log_level), "info");
    out->inbound_port = 15006;
    out->outbound_port = 15001;
    out->admin_port = 15000;
    out->workers = 1;
    out->request_head_timeout_ms = 10000;
    out->idle_timeout_ms = 3600000;

    if (settings_parse(settings, sizeof(settings) / sizeof(settings[0]), argc, argv, out,
                       &out->show_help, error, error_size) != 0)
        return -1;
    if (out->show_help)
        return 0;
    if (out->service[0] == '\0') {
        snprintf(error, error_size, "--service is required: the service this proxy fronts");
        return -1;
    }
    if (out->app_port == 0) {
        snprintf(error, error_size, "--app-port is required: where the local application listens");
        return -1;
    }
    if (out->node_id[0] == '\0') {
        char host[128] = "host";
        gethostname(host, sizeof(host) - 1);
        snprintf(out->node_id, sizeof(out->node_id), "%.100s-%.100s-%ld", out->service, host,
                 (long)getpid());
    }
    return 0;
}
