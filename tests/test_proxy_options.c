/*
 * test_proxy_options.c — atrium-proxy's settings: defaults, required
 * settings, flags, the JSON config file (numbers as JSON numbers or strings),
 * precedence (flags win), and the error for every kind of bad input.
 */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "proxy_options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse(proxy_options *out, char *error, int count, ...)
{
    char *argv[32] = {"atrium-proxy"};
    va_list arguments;
    va_start(arguments, count);
    for (int i = 0; i < count; i++)
        argv[i + 1] = va_arg(arguments, char *);
    va_end(arguments);
    error[0] = '\0';
    return proxy_options_parse(count + 1, argv, out, error, 512);
}

/* Writes text to a new temporary file; returns its path (static buffer; the
 * caller unlinks it). */
static const char *write_config(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/atrium-proxy-options-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_defaults(void **state)
{
    (void)state;
    proxy_options options;
    char error[512];
    assert_int_equal(parse(&options, error, 4, "--service", "cart", "--app-port", "8080"), 0);
    assert_string_equal(options.service, "cart");
    assert_int_equal(options.app_port, 8080);
    assert_string_equal(options.xds, "127.0.0.1:15010");
    assert_string_equal(options.namespace_name, "default");
    assert_int_equal(options.inbound_port, 15006);
    assert_int_equal(options.outbound_port, 15001);
    assert_int_equal(options.admin_port, 15000);
    assert_string_equal(options.admin_host, "127.0.0.1");
    assert_int_equal(options.workers, 1);
    assert_string_equal(options.state_dir, "");
    assert_non_null(strstr(options.node_id, "cart-")); /* <service>-<host>-<pid> */
    assert_false(options.show_help);
}

static void test_flags(void **state)
{
    (void)state;
    proxy_options options;
    char error[512];
    assert_int_equal(parse(&options, error, 19, "--service", "cart", "--app-port=9000", "--xds",
                           "[::1]:18000", "--node", "cart-1", "--namespace", "shop",
                           "--outbound-port", "16001", "--inbound-port", "16006", "--workers", "4",
                           "--state-dir", "/var/lib/atrium-proxy", "--admin-port", "0"),
                     0);
    assert_int_equal(options.app_port, 9000);
    assert_string_equal(options.xds, "[::1]:18000");
    assert_string_equal(options.node_id, "cart-1");
    assert_string_equal(options.namespace_name, "shop");
    assert_int_equal(options.outbound_port, 16001);
    assert_int_equal(options.inbound_port, 16006);
    assert_int_equal(options.workers, 4);
    assert_string_equal(options.state_dir, "/var/lib/atrium-proxy");
    assert_int_equal(options.admin_port, 0);
}

static void test_help(void **state)
{
    (void)state;
    proxy_options options;
    char error[512];
    assert_int_equal(parse(&options, error, 2, "--bogus", "--help"), 0);
    assert_true(options.show_help);
    assert_non_null(strstr(proxy_options_usage(), "--app-port"));
}

static void test_errors(void **state)
{
    (void)state;
    proxy_options options;
    char error[512];
    assert_int_equal(parse(&options, error, 2, "--app-port", "8080"), -1);
    assert_non_null(strstr(error, "--service is required"));
    assert_int_equal(parse(&options, error, 2, "--service", "cart"), -1);
    assert_non_null(strstr(error, "--app-port is required"));
    assert_int_equal(parse(&options, error, 4, "--service", "cart", "--app-port", "70000"), -1);
    assert_non_null(strstr(error, "app-port: '70000' must be a number 1-65535"));
    assert_int_equal(parse(&options, error, 4, "--service", "cart", "--app-port", "80x"), -1);
    assert_non_null(strstr(error, "app-port"));
    assert_int_equal(
        parse(&options, error, 6, "--service", "cart", "--app-port", "80", "--workers", "0"), -1);
    assert_non_null(strstr(error, "workers"));
    assert_int_equal(
        parse(&options, error, 6, "--service", "cart", "--app-port", "80", "--xds", "localhost"),
        -1);
    assert_non_null(strstr(error, "xds"));
    assert_int_equal(
        parse(&options, error, 6, "--service", "cart", "--app-port", "80", "--log-level", "loud"),
        -1);
    assert_non_null(strstr(error, "debug, info, warn or error"));
    assert_int_equal(parse(&options, error, 5, "--service", "cart", "--app-port", "80", "--node"),
                     -1);
    assert_non_null(strstr(error, "--node needs a value"));
    assert_int_equal(parse(&options, error, 1, "stray"), -1);
    assert_non_null(strstr(error, "stray"));
    assert_int_equal(parse(&options, error, 2, "--app_port", "80"), -1);
    assert_non_null(strstr(error, "unknown option '--app_port'"));
}

/* The request-head and idle timeouts: defaults, flags, config file, 0 (no
 * limit), bounds, and --help. */
static void test_timeouts(void **state)
{
    (void)state;
    proxy_options options;
    char error[512];
    assert_int_equal(parse(&options, error, 4, "--service", "cart", "--app-port", "80"), 0);
    assert_int_equal(options.request_head_timeout_ms, 10000);
    assert_int_equal(options.idle_timeout_ms, 3600000);
    assert_int_equal(parse(&options, error, 8, "--service", "cart", "--app-port", "80",
                           "--request-head-timeout-ms", "2500", "--idle-timeout-ms", "0"),
                     0);
    assert_int_equal(options.request_head_timeout_ms, 2500);
    assert_int_equal(options.idle_timeout_ms, 0);
    const char *path =
        write_config("{\"service\": \"cart\", \"app_port\": 80,"
                     " \"request_head_timeout_ms\": 0, \"idle-timeout-ms\": \"60000\"}");
    assert_int_equal(parse(&options, error, 2, "--config", path), 0);
    assert_int_equal(options.request_head_timeout_ms, 0);
    assert_int_equal(options.idle_timeout_ms, 60000);
    unlink(path);
    assert_int_equal(parse(&options, error, 6, "--service", "cart", "--app-port", "80",
                           "--request-head-timeout-ms", "3600001"),
                     -1);
    assert_non_null(strstr(error, "request-head-timeout-ms"));
    assert_int_equal(parse(&options, error, 6, "--service", "cart", "--app-port", "80",
                           "--idle-timeout-ms", "-1"),
                     -1);
    assert_non_null(strstr(error, "idle-timeout-ms"));
    assert_non_null(strstr(proxy_options_usage(), "--request-head-timeout-ms"));
    assert_non_null(strstr(proxy_options_usage(), "--idle-timeout-ms"));
}

static void test_config_file(void **state)
{
    (void)state;
    proxy_options options;
    char error[512];
    const char *path =
        write_config("{\"service\": \"cart\", \"app_port\": 8080, \"workers\": \"2\","
                     " \"outbound-port\": 16001}");
    assert_int_equal(parse(&options, error, 4, "--outbound-port", "17001", "--config", path), 0);
    assert_string_equal(options.service, "cart");
    assert_int_equal(options.app_port, 8080);
    assert_int_equal(options.workers, 2);
    assert_int_equal(options.outbound_port, 17001); /* the flag wins */
    unlink(path);

    path = write_config("{\"service\": \"cart\", \"app_port\": 8080, \"colour\": \"blue\"}");
    assert_int_equal(parse(&options, error, 2, "--config", path), -1);
    assert_non_null(strstr(error, "unknown setting 'colour'"));
    unlink(path);
    path = write_config("{\"service\": true}");
    assert_int_equal(parse(&options, error, 2, "--config", path), -1);
    assert_non_null(strstr(error, "'service' must be a string"));
    unlink(path);
    path = write_config("{\"service\": \"cart\",\n \"app_port\": }");
    assert_int_equal(parse(&options, error, 2, "--config", path), -1);
    assert_non_null(strstr(error, ":2:")); /* line of the syntax error */
    unlink(path);
    assert_int_equal(parse(&options, error, 2, "--config", "/nonexistent/proxy.json"), -1);
    assert_non_null(strstr(error, "/nonexistent/proxy.json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),    cmocka_unit_test(test_flags),
        cmocka_unit_test(test_help),        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_config_file), cmocka_unit_test(test_timeouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
