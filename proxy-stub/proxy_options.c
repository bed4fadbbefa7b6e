/*
 * proxy_options.c — atrium-proxy's settings from defaults, a JSON config file
 * and flags (see proxy_options.h). A config file uses the flag names as keys
 * ("app-port" or "app_port"); numbers may be JSON numbers or strings.
 */
#include "proxy_options.h"

#include "address.h"
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum setting_kind {
    SETTING_TEXT,
    SETTING_ADDRESS,
    SETTING_PORT,
    SETTING_WORKERS,
    SETTING_LEVEL
} setting_kind;

typedef struct setting {
    const char *name;
    setting_kind kind;
    size_t offset;
    size_t size;
} setting;

#define TEXT_SETTING(flag, field, kind)                                                            \
    {                                                                                              \
        flag, kind, offsetof(proxy_options, field), sizeof(((proxy_options *)0)->field)            \
    }

static const setting settings[] = {
    TEXT_SETTING("xds", xds, SETTING_ADDRESS),
    TEXT_SETTING("node", node_id, SETTING_TEXT),
    TEXT_SETTING("service", service, SETTING_TEXT),
    TEXT_SETTING("namespace", namespace_name, SETTING_TEXT),
    TEXT_SETTING("app-port", app_port, SETTING_PORT),
    TEXT_SETTING("inbound-port", inbound_port, SETTING_PORT),
    TEXT_SETTING("outbound-port", outbound_port, SETTING_PORT),
    TEXT_SETTING("admin-port", admin_port, SETTING_PORT),
    TEXT_SETTING("admin-host", admin_host, SETTING_TEXT),
    TEXT_SETTING("workers", workers, SETTING_WORKERS),
    TEXT_SETTING("state-dir", state_dir, SETTING_TEXT),
    TEXT_SETTING("log-level", log_level, SETTING_LEVEL),
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
           "  --state-dir DIR        keeps the last accepted configuration, to serve from\n"
           "                         when atriumd cannot be reached at start\n"
           "  --log-level LEVEL      debug, info (default), warn or error\n"
           "  --help                 show this text\n";
}

/* Finds a setting by flag or config key; '_' and '-' are the same. */
static const setting *find_setting(const char *name)
{
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        const char *want = settings[i].name;
        size_t j = 0;
        for (; want[j] != '\0' && name[j] != '\0'; j++)
            if ((name[j] == '_' ? '-' : name[j]) != want[j])
                break;
        if (want[j] == '\0' && name[j] == '\0')
            return &settings[i];
    }
    return NULL;
}

static int apply(const setting *item, const char *value, proxy_options *out, const char *source,
                 char *error, size_t error_size)
{
    char *field = (char *)out + item->offset;
    switch (item->kind) {
    case SETTING_PORT:
    case SETTING_WORKERS: {
        char *end = NULL;
        long number = strtol(value, &end, 10);
        long low = item->kind == SETTING_PORT ? 0 : 1,
             high = item->kind == SETTING_PORT ? 65535 : 64;
        if (value[0] == '\0' || *end != '\0' || number < low || number > high) {
            snprintf(error, error_size, "%s %s: '%s' must be a number %ld-%ld", source, item->name,
                     value, low, high);
            return -1;
        }
        if (item->kind == SETTING_PORT)
            *(uint16_t *)field = (uint16_t)number;
        else
            *(unsigned *)field = (unsigned)number;
        return 0;
    }
    case SETTING_LEVEL: {
        log_level ignored;
        if (log_level_parse(value, &ignored) != 0) {
            snprintf(error, error_size, "%s log-level: '%s' must be debug, info, warn or error",
                     source, value);
            return -1;
        }
        break;
    }
    case SETTING_ADDRESS: {
        char host[256], reason[256];
        uint16_t port;
        if (address_split(value, host, sizeof(host), &port, reason, sizeof(reason)) != 0) {
            snprintf(error, error_size, "%s %s: %s", source, item->name, reason);
            return -1;
        }
        break;
    }
    case SETTING_TEXT:
        if (value[0] == '\0') {
            snprintf(error, error_size, "%s %s: must not be empty", source, item->name);
            return -1;
        }
        break;
    }
    if (strlen(value) >= item->size) {
        snprintf(error, error_size, "%s %s: value too long", source, item->name);
        return -1;
    }
    memcpy(field, value, strlen(value) + 1);
    return 0;
}

static int load_config_file(const char *path, proxy_options *out, char *error, size_t error_size)
{
    json_error_t parse_error;
    json_t *document = json_load_file(path, JSON_REJECT_DUPLICATES, &parse_error);
    if (document == NULL) {
        snprintf(error, error_size, "config %s:%d:%d: %s", path, parse_error.line,
                 parse_error.column, parse_error.text);
        return -1;
    }
    int result = 0;
    if (!json_is_object(document)) {
        snprintf(error, error_size, "config %s: must be a JSON object of settings", path);
        result = -1;
    }
    char source[1100];
    snprintf(source, sizeof(source), "config %s:", path);
    const char *key;
    json_t *value;
    json_object_foreach(document, key, value)
    {
        if (result != 0)
            break;
        const setting *item = find_setting(key);
        char number[32];
        if (item == NULL) {
            snprintf(error, error_size, "config %s: unknown setting '%s'", path, key);
            result = -1;
        } else if (json_is_integer(value)) {
            snprintf(number, sizeof(number), "%lld", (long long)json_integer_value(value));
            result = apply(item, number, out, source, error, error_size);
        } else if (!json_is_string(value)) {
            snprintf(error, error_size, "config %s: '%s' must be a string or a number", path, key);
            result = -1;
        } else {
            result = apply(item, json_string_value(value), out, source, error, error_size);
        }
    }
    json_decref(document);
    return result;
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

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            out->show_help = true;
            return 0;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *config = NULL;
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf(error, error_size, "--config needs a file name");
                return -1;
            }
            config = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config = argv[i] + 9;
        }
        if (config != NULL && load_config_file(config, out, error, error_size) != 0)
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *argument = argv[i];
        if (strncmp(argument, "--", 2) != 0) {
            snprintf(error, error_size, "unexpected argument '%s' (see --help)", argument);
            return -1;
        }
        char name[64];
        const char *equals = strchr(argument, '=');
        size_t name_length = equals ? (size_t)(equals - argument - 2) : strlen(argument + 2);
        if (name_length >= sizeof(name)) {
            snprintf(error, error_size, "unknown option '%s' (see --help)", argument);
            return -1;
        }
        memcpy(name, argument + 2, name_length);
        name[name_length] = '\0';
        const char *value = equals ? equals + 1 : NULL;
        if (strcmp(name, "config") == 0) {
            if (value == NULL)
                i++;
            continue;
        }
        const setting *item = find_setting(name);
        if (item == NULL || strchr(name, '_') != NULL) {
            snprintf(error, error_size, "unknown option '--%s' (see --help)", name);
            return -1;
        }
        if (value == NULL) {
            if (i + 1 >= argc) {
                snprintf(error, error_size, "--%s needs a value", name);
                return -1;
            }
            value = argv[++i];
        }
        if (apply(item, value, out, "option", error, error_size) != 0)
            return -1;
    }
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
