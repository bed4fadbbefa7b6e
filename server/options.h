/*
 * options.h — atriumd's settings: defaults, an optional JSON config file, and
 * command-line flags, in that order of precedence (flags win).
 */
#ifndef ATRIUM_SERVER_OPTIONS_H
#define ATRIUM_SERVER_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

#define OPTIONS_TEXT_MAX 1024

typedef struct atriumd_options {
    char data_dir[OPTIONS_TEXT_MAX];  /* default ./atrium-data */
    char rest_addr[OPTIONS_TEXT_MAX]; /* default 127.0.0.1:15080 */
    char xds_addr[OPTIONS_TEXT_MAX];  /* default 127.0.0.1:15010 */
    char tls_addr[OPTIONS_TEXT_MAX];  /* default 127.0.0.1:15012 */
    bool synchronous_full;            /* --synchronous full */
    int xds_debounce_ms;              /* changes within this window are one push (100) */
    int xds_push_interval_ms;         /* at most one push per interval (100) */
    int xds_slow_consumer_ms;         /* a stream behind this long is closed (30000) */
    int proxy_retention_ms;           /* disconnected proxies forgotten after (3600000) */
    int max_proxy_rows;               /* proxy status rows kept (10000) */
    int max_database_mb;              /* writes past it fail as disk full; 0: no cap */
    char log_level[16];               /* debug | info | warn | error */
    char trust_domain[256];           /* of SPIFFE IDs, default atrium.local */
    /* An operator's CA (all four or none), used at the CA's first start. */
    char ca_root_cert[OPTIONS_TEXT_MAX], ca_root_key[OPTIONS_TEXT_MAX];
    char ca_issuer_cert[OPTIONS_TEXT_MAX], ca_issuer_key[OPTIONS_TEXT_MAX];
    bool show_help;
} atriumd_options;

/* Fills *out from defaults, the config file named by --config (if any) and
 * the flags. Returns 0, or -1 with a message in error naming the bad flag,
 * config key or value. argv is not modified. */
int atriumd_options_parse(int argc, char **argv, atriumd_options *out, char *error,
                          size_t error_size);

/* The --help text (static). */
const char *atriumd_options_usage(void);

#endif
