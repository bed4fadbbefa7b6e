/*
 * proxy_options.h — atrium-proxy's settings: defaults, an optional JSON
 * config file (--config), then command-line flags (flags win).
 */
#ifndef ATRIUM_PROXY_OPTIONS_H
#define ATRIUM_PROXY_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct proxy_options {
    char xds[256];            /* atriumd's xDS address, default 127.0.0.1:15010 */
    char node_id[256];        /* default <service>-<hostname>-<pid> */
    char service[256];        /* required */
    char namespace_name[256]; /* default "default" */
    uint16_t app_port;        /* required */
    uint16_t inbound_port;    /* default 15006 */
    uint16_t outbound_port;   /* default 15001 */
    uint16_t admin_port;      /* default 15000 (0: any free port) */
    char admin_host[64];      /* default 127.0.0.1 */
    unsigned workers;         /* default 1 */
    /* A request head must arrive whole within this after its first byte, or
     * the proxy answers 408 and closes (default 10,000; 0: no limit). */
    unsigned request_head_timeout_ms;
    /* A client connection with no bytes moving on it or on its request's
     * upstream for this long is closed (default 3,600,000; 0: no limit). */
    unsigned idle_timeout_ms;
    char state_dir[1024]; /* "" : no saved state */
    char log_level[16];   /* debug | info | warn | error */
    bool show_help;
} proxy_options;

/* Fills *out. Returns 0, or -1 with a message in error naming the bad flag,
 * config key or value. */
int proxy_options_parse(int argc, char **argv, proxy_options *out, char *error, size_t error_size);

/* The --help text (static). */
const char *proxy_options_usage(void);

#endif
