/*
 * options.c — atriumd's flags and config file. The config file is JSON with
 * the flag names as keys (dashes or underscores), e.g.
 *   {"data_dir": "/var/lib/atrium", "rest_addr": "127.0.0.1:15080"}
 * Unknown keys and values of the wrong type are errors, not ignored.
 */
#include "options.h"

#include "settings.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define TEXT_SETTING(flag, kind, field)                                                            \
    {                                                                                              \
        flag, kind, offsetof(atriumd_options, field), sizeof(((atriumd_options *)0)->field), 0, 0, \
            NULL, NULL, NULL                                                                       \
    }
#define MILLISECONDS_SETTING(flag, field)                                                          \
    {                                                                                              \
        flag, SETTINGS_INTEGER, offsetof(atriumd_options, field), sizeof(int), 0, 60000,           \
            "milliseconds", NULL, NULL                                                             \
    }

static const settings_entry settings[] = {
    TEXT_SETTING("data-dir", SETTINGS_TEXT, data_dir),
    TEXT_SETTING("rest-addr", SETTINGS_ADDRESS, rest_addr),
    TEXT_SETTING("xds-addr", SETTINGS_ADDRESS, xds_addr),
    TEXT_SETTING("tls-addr", SETTINGS_ADDRESS, tls_addr),
    {"synchronous", SETTINGS_SWITCH, offsetof(atriumd_options, synchronous_full), sizeof(bool), 0,
     0, NULL, "normal", "full"},
    TEXT_SETTING("log-level", SETTINGS_LOG_LEVEL, log_level),
    TEXT_SETTING("trust-domain", SETTINGS_TEXT, trust_domain),
    TEXT_SETTING("ca-root-cert", SETTINGS_TEXT, ca_root_cert),
    TEXT_SETTING("ca-root-key", SETTINGS_TEXT, ca_root_key),
    TEXT_SETTING("ca-issuer-cert", SETTINGS_TEXT, ca_issuer_cert),
    TEXT_SETTING("ca-issuer-key", SETTINGS_TEXT, ca_issuer_key),
    MILLISECONDS_SETTING("xds-debounce-ms", xds_debounce_ms),
    MILLISECONDS_SETTING("xds-push-interval-ms", xds_push_interval_ms),
    {"xds-slow-consumer-ms", SETTINGS_INTEGER, offsetof(atriumd_options, xds_slow_consumer_ms),
     sizeof(int), 1000, 3600000, "milliseconds", NULL, NULL},
    {"proxy-retention-ms", SETTINGS_INTEGER, offsetof(atriumd_options, proxy_retention_ms),
     sizeof(int), 1000, 2000000000, "milliseconds", NULL, NULL},
    {"max-proxy-rows", SETTINGS_INTEGER, offsetof(atriumd_options, max_proxy_rows), sizeof(int), 1,
     1000000, NULL, NULL, NULL},
    {"max-database-mb", SETTINGS_INTEGER, offsetof(atriumd_options, max_database_mb), sizeof(int),
     0, 1000000, "MiB", NULL, NULL},
};

const char *atriumd_options_usage(void)
{
    return "Usage: atriumd [options]\n"
           "\n"
           "Atrium's control plane: stores the mesh in SQLite and serves it over xDS.\n"
           "\n"
           "Options:\n"
           "  --config FILE          JSON file with any of the settings below (flags win)\n"
           "  --data-dir DIR         database, keys and admin token (default ./atrium-data)\n"
           "  --rest-addr HOST:PORT  admin REST API (default 127.0.0.1:15080)\n"
           "  --xds-addr HOST:PORT   plaintext xDS, loopback only (default 127.0.0.1:15010)\n"
           "  --tls-addr HOST:PORT   mTLS xDS and CA (default 127.0.0.1:15012)\n"
           "  --synchronous MODE     SQLite durability: normal (default) or full\n"
           "  --log-level LEVEL      debug, info (default), warn or error\n"
           "  --trust-domain NAME    of workload SPIFFE IDs (default atrium.local)\n"
           "  --ca-root-cert FILE --ca-root-key FILE --ca-issuer-cert FILE --ca-issuer-key FILE\n"
           "                         an operator's root and issuing CA, copied into the data\n"
           "                         directory at the CA's first start (all four or none)\n"
           "  --xds-debounce-ms N    changes within N ms become one xDS push (default 100)\n"
           "  --xds-push-interval-ms N  at most one xDS push per N ms (default 100)\n"
           "  --xds-slow-consumer-ms N  close an xDS stream that stays behind (not reading)\n"
           "                         for N ms (default 30000)\n"
           "  --proxy-retention-ms N forget a disconnected proxy's status after N ms\n"
           "                         (default 3600000)\n"
           "  --max-proxy-rows N     keep the status of at most N proxies (default 10000)\n"
           "  --max-database-mb N    refuse writes that would grow atrium.db past N MiB, as\n"
           "                         if the disk were full (default 0: no cap)\n"
           "  --help                 show this text\n";
}

int atriumd_options_parse(int argc, char **argv, atriumd_options *out, char *error,
                          size_t error_size)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->data_dir, sizeof(out->data_dir), "./atrium-data");
    snprintf(out->rest_addr, sizeof(out->rest_addr), "127.0.0.1:15080");
    snprintf(out->xds_addr, sizeof(out->xds_addr), "127.0.0.1:15010");
    snprintf(out->tls_addr, sizeof(out->tls_addr), "127.0.0.1:15012");
    snprintf(out->log_level, sizeof(out->log_level), "info");
    snprintf(out->trust_domain, sizeof(out->trust_domain), "atrium.local");
    out->xds_debounce_ms = 100;
    out->xds_push_interval_ms = 100;
    out->xds_slow_consumer_ms = 30000;
    out->proxy_retention_ms = 3600000;
    out->max_proxy_rows = 10000;

    return settings_parse(settings, sizeof(settings) / sizeof(settings[0]), argc, argv, out,
                          &out->show_help, error, error_size);
}
