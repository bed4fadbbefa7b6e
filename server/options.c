/*
 * options.c — atriumd's flags and config file. The config file is JSON with
 * the flag names as keys (dashes or underscores), e.g.
 *   {"data_dir": "/var/lib/atrium", "rest_addr": "127.0.0.1:15080"}
 * Unknown keys and values of the wrong type are errors, not ignored.
 */
#include "options.h"

#include "address.h"
#include "log.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum setting_kind {
    SETTING_ADDRESS,
    SETTING_TEXT,
    SETTING_SYNCHRONOUS,
    SETTING_LEVEL,
    SETTING_MILLISECONDS, /* an int field, 0-60000 */
} setting_kind;

typedef struct setting {
    const char *name; /* flag without "--", dashes */
    setting_kind kind;
    size_t offset;
    size_t size;
} setting;

#define TEXT_SETTING(flag, kind, field)                                                            \
    {                                                                                              \
        flag, kind, offsetof(atriumd_options, field), sizeof(((atriumd_options *)0)->field)        \
    }

static const setting settings[] = {
    TEXT_SETTING("data-dir", SETTING_TEXT, data_dir),
    TEXT_SETTING("rest-addr", SETTING_ADDRESS, rest_addr),
    TEXT_SETTING("xds-addr", SETTING_ADDRESS, xds_addr),
    TEXT_SETTING("tls-addr", SETTING_ADDRESS, tls_addr),
    {"synchronous", SETTING_SYNCHRONOUS, 0, 0},
    TEXT_SETTING("log-level", SETTING_LEVEL, log_level),
    TEXT_SETTING("trust-domain", SETTING_TEXT, trust_domain),
    TEXT_SETTING("ca-root-cert", SETTING_TEXT, ca_root_cert),
    TEXT_SETTING("ca-root-key", SETTING_TEXT, ca_root_key),
    TEXT_SETTING("ca-issuer-cert", SETTING_TEXT, ca_issuer_cert),
    TEXT_SETTING("ca-issuer-key", SETTING_TEXT, ca_issuer_key),
    {"xds-debounce-ms", SETTING_MILLISECONDS, offsetof(atriumd_options, xds_debounce_ms),
     sizeof(int)},
    {"xds-push-interval-ms", SETTING_MILLISECONDS, offsetof(atriumd_options, xds_push_interval_ms),
     sizeof(int)},
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
           "  --help                 show this text\n";
}

/* Finds a setting by flag or config key; '_' and '-' are the same. */
static const setting *find_setting(const char *name)
{
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        const char *want = settings[i].name;
        size_t j = 0;
        for (; want[j] != '\0' && name[j] != '\0'; j++) {
            char got = name[j] == '_' ? '-' : name[j];
            if (got != want[j])
                break;
        }
        if (want[j] == '\0' && name[j] == '\0')
            return &settings[i];
    }
    return NULL;
}

static int apply(const setting *item, const char *value, atriumd_options *out, const char *source,
                 char *error, size_t error_size)
{
    switch (item->kind) {
    case SETTING_SYNCHRONOUS:
        if (strcmp(value, "normal") != 0 && strcmp(value, "full") != 0) {
            snprintf(error, error_size, "%s synchronous: '%s' must be normal or full", source,
                     value);
            return -1;
        }
        out->synchronous_full = strcmp(value, "full") == 0;
        return 0;
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
    case SETTING_MILLISECONDS: {
        char *end = NULL;
        long number = strtol(value, &end, 10);
        if (value[0] == '\0' || *end != '\0' || number < 0 || number > 60000) {
            snprintf(error, error_size, "%s %s: '%s' must be a number of milliseconds 0-60000",
                     source, item->name, value);
            return -1;
        }
        *(int *)((char *)out + item->offset) = (int)number;
        return 0;
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
    memcpy((char *)out + item->offset, value, strlen(value) + 1);
    return 0;
}

static int load_config_file(const char *path, atriumd_options *out, char *error, size_t error_size)
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
    const char *key;
    json_t *value;
    char source[OPTIONS_TEXT_MAX + 16];
    snprintf(source, sizeof(source), "config %s:", path);
    json_object_foreach(document, key, value)
    {
        if (result != 0)
            break;
        const setting *item = find_setting(key);
        if (item == NULL) {
            snprintf(error, error_size, "config %s: unknown setting '%s'", path, key);
            result = -1;
        } else if (item->kind == SETTING_MILLISECONDS && json_is_integer(value)) {
            char number[32];
            snprintf(number, sizeof(number), "%lld", (long long)json_integer_value(value));
            result = apply(item, number, out, source, error, error_size);
        } else if (!json_is_string(value)) {
            snprintf(error, error_size, "config %s: '%s' must be a string", path, key);
            result = -1;
        } else {
            result = apply(item, json_string_value(value), out, source, error, error_size);
        }
    }
    json_decref(document);
    return result;
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

    /* First pass: --help and --config, so that flags can override the file. */
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
            snprintf(error, error_size, "unexpected argument '%s'", argument);
            return -1;
        }
        char name[64];
        const char *equals = strchr(argument, '=');
        size_t name_length = equals ? (size_t)(equals - argument - 2) : strlen(argument + 2);
        if (name_length >= sizeof(name)) {
            snprintf(error, error_size, "unknown option '%s'", argument);
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
    return 0;
}
