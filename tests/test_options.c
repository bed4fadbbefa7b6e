/*
 * test_options.c — atriumd's settings: defaults, flags, the JSON config file,
 * precedence (flags win), and the error for every kind of bad input.
 */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse(atriumd_options *out, char *error, int count, ...)
{
    char *argv[32] = {"atriumd"};
    va_list arguments;
    va_start(arguments, count);
    for (int i = 0; i < count; i++)
        argv[i + 1] = va_arg(arguments, char *);
    va_end(arguments);
    error[0] = '\0';
    return atriumd_options_parse(count + 1, argv, out, error, 512);
}

/* Writes text to a new temporary file; returns its path (static buffer). */
static const char *write_config(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/atrium-options-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_defaults(void **state)
{
    (void)state;
    atriumd_options options;
    char error[512];
    assert_int_equal(parse(&options, error, 0), 0);
    assert_string_equal(options.data_dir, "./atrium-data");
    assert_string_equal(options.rest_addr, "127.0.0.1:15080");
    assert_string_equal(options.xds_addr, "127.0.0.1:15010");
    assert_string_equal(options.tls_addr, "127.0.0.1:15012");
    assert_false(options.synchronous_full);
    assert_false(options.show_help);
}

static void test_flags_both_forms(void **state)
{
    (void)state;
    atriumd_options options;
    char error[512];
    assert_int_equal(parse(&options, error, 6, "--data-dir", "/var/lib/atrium",
                           "--rest-addr=[::1]:8080", "--synchronous", "full",
                           "--xds-addr=0.0.0.0:1"),
                     0);
    assert_string_equal(options.data_dir, "/var/lib/atrium");
    assert_string_equal(options.rest_addr, "[::1]:8080");
    assert_string_equal(options.xds_addr, "0.0.0.0:1");
    assert_true(options.synchronous_full);
}

static void test_help(void **state)
{
    (void)state;
    atriumd_options options;
    char error[512];
    assert_int_equal(parse(&options, error, 2, "--bogus", "--help"), 0);
    assert_true(options.show_help);
    assert_non_null(strstr(atriumd_options_usage(), "--data-dir"));
}

static void test_bad_flags(void **state)
{
    (void)state;
    atriumd_options options;
    char error[512];
    assert_int_equal(parse(&options, error, 1, "--bogus"), -1);
    assert_non_null(strstr(error, "--bogus"));
    assert_int_equal(parse(&options, error, 1, "--data-dir"), -1);
    assert_non_null(strstr(error, "needs a value"));
    assert_int_equal(parse(&options, error, 2, "--rest-addr", "localhost"), -1);
    assert_non_null(strstr(error, "rest-addr"));
    assert_int_equal(parse(&options, error, 2, "--rest-addr", "127.0.0.1:70000"), -1);
    assert_non_null(strstr(error, "port"));
    assert_int_equal(parse(&options, error, 2, "--synchronous", "sometimes"), -1);
    assert_non_null(strstr(error, "normal or full"));
    assert_int_equal(parse(&options, error, 1, "stray"), -1);
    assert_non_null(strstr(error, "stray"));
    assert_int_equal(parse(&options, error, 2, "--data_dir", "x"), -1);
}

static void test_config_file_and_precedence(void **state)
{
    (void)state;
    const char *path = write_config("{\"data_dir\": \"/srv/atrium\", \"rest-addr\": "
                                    "\"127.0.0.1:9000\", \"synchronous\": \"full\"}");
    atriumd_options options;
    char error[512];
    assert_int_equal(parse(&options, error, 4, "--rest-addr", "127.0.0.1:9001", "--config", path),
                     0);
    assert_string_equal(options.data_dir, "/srv/atrium");
    assert_string_equal(options.rest_addr, "127.0.0.1:9001"); /* the flag wins */
    assert_true(options.synchronous_full);
    unlink(path);
}

static void test_config_errors(void **state)
{
    (void)state;
    atriumd_options options;
    char error[512];
    const char *path = write_config("{\"data_dir\": \"/x\", \"colour\": \"blue\"}");
    assert_int_equal(parse(&options, error, 2, "--config", path), -1);
    assert_non_null(strstr(error, "colour"));
    unlink(path);

    path = write_config("{\"data_dir\": 5}");
    assert_int_equal(parse(&options, error, 2, "--config", path), -1);
    assert_non_null(strstr(error, "must be a string"));
    unlink(path);

    path = write_config("{\"data_dir\": \n  \"/x\",,}");
    assert_int_equal(parse(&options, error, 2, "--config", path), -1);
    assert_non_null(strstr(error, ":2:")); /* line of the syntax error */
    unlink(path);

    path = write_config("{\"xds_addr\": \"nope\"}");
    assert_int_equal(parse(&options, error, 2, "--config", path), -1);
    assert_non_null(strstr(error, "xds-addr"));
    unlink(path);

    assert_int_equal(parse(&options, error, 2, "--config", "/nonexistent/atrium.json"), -1);
    assert_non_null(strstr(error, "/nonexistent/atrium.json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_flags_both_forms),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_config_file_and_precedence),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
