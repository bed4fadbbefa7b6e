/*
 * xds_ports.c — issue 12, defect 1: a second atriumd started on the xDS
 * ports of a running one (another data directory) must not come up sharing
 * them (gRPC sets SO_REUSEPORT by default, and the kernel then splits new
 * xDS connections between the two). Against real processes on 127.0.0.1:
 *   - same --xds-addr and --tls-addr: the second exits non-zero at start,
 *     its log saying "address in use" and naming the address;
 *   - same --tls-addr only: the same;
 *   - the first keeps running and stops cleanly.
 * Only the processes started here are signalled, by pid, also on failure
 * (and they die with the test through PR_SET_PDEATHSIG).
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "atriumd_fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_WAIT_MS 10000 /* the second atriumd must give up within this */
#define POLL_MS      20

static atriumd_fixture first;

/* The second atriumd, while it runs (killed by the teardown if it still does). */
static struct {
    pid_t pid;
    char data_dir[64];
    char log_path[128];
} second;

static int remove_entry(const char *path, const struct stat *info, int flag, struct FTW *walk)
{
    (void)info;
    (void)flag;
    (void)walk;
    return remove(path);
}

static void stop_second(void)
{
    if (second.pid > 0) {
        kill(second.pid, SIGKILL);
        waitpid(second.pid, NULL, 0);
        second.pid = 0;
    }
    if (second.data_dir[0] != '\0')
        nftw(second.data_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    memset(&second, 0, sizeof(second));
}

/* The second atriumd's log so far (the caller frees it). */
static char *second_log(void)
{
    FILE *file = fopen(second.log_path, "r");
    char *text = calloc(1, 1);
    size_t length = 0;
    char chunk[4096];
    size_t got;
    while (file != NULL && text != NULL && (got = fread(chunk, 1, sizeof(chunk), file)) > 0) {
        char *grown = realloc(text, length + got + 1);
        if (grown == NULL)
            break;
        memcpy(grown + length, chunk, got);
        length += got;
        grown[length] = '\0';
        text = grown;
    }
    if (file != NULL)
        fclose(file);
    assert_non_null(text);
    return text;
}

/* Starts a second atriumd (its own data directory, REST on a free port) on
 * the given xDS addresses and waits (bounded) for it to exit. Returns its
 * exit status; fails the test when it got ready or did not exit in time. */
static int run_second(const char *xds_addr, const char *tls_addr)
{
    snprintf(second.data_dir, sizeof(second.data_dir), "/tmp/atrium-xdsports-XXXXXX");
    assert_non_null(mkdtemp(second.data_dir));
    snprintf(second.log_path, sizeof(second.log_path), "%s/atriumd.stderr", second.data_dir);
    int log_fd = open(second.log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(log_fd >= 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int null_fd = open("/dev/null", O_RDWR);
        if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(null_fd, STDOUT_FILENO) < 0 ||
            dup2(log_fd, STDERR_FILENO) < 0)
            _exit(127);
        execl(ATRIUMD_PATH, "atriumd", "--data-dir", second.data_dir, "--rest-addr", "127.0.0.1:0",
              "--xds-addr", xds_addr, "--tls-addr", tls_addr, (char *)NULL);
        _exit(127);
    }
    close(log_fd);
    second.pid = pid;
    for (int waited = 0; waited <= EXIT_WAIT_MS; waited += POLL_MS) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            second.pid = 0;
            assert_true(WIFEXITED(status));
            return WEXITSTATUS(status);
        }
        char *log = second_log();
        bool ready = strstr(log, "atriumd: ready") != NULL;
        if (ready)
            fprintf(stderr, "the second atriumd came up on %s / %s:\n%s\n", xds_addr, tls_addr,
                    log);
        free(log);
        if (ready)
            fail_msg("a second atriumd got ready on the ports of a running one");
        atriumd_fixture_sleep_ms(POLL_MS);
    }
    fail_msg("the second atriumd neither exited nor got ready within %d ms", EXIT_WAIT_MS);
    return -1;
}

/* Its log says the address is in use, naming it. */
static void expect_address_in_use(const char *address)
{
    char *log = second_log();
    bool said = strstr(log, "address in use") != NULL && strstr(log, address) != NULL;
    if (!said)
        fprintf(stderr, "the second atriumd's log does not say %s is in use:\n%s\n", address, log);
    free(log);
    assert_true(said);
}

static void test_same_xds_and_tls_ports(void **state)
{
    (void)state;
    char xds[64], tls[64];
    snprintf(xds, sizeof(xds), "127.0.0.1:%d", first.xds_port);
    snprintf(tls, sizeof(tls), "127.0.0.1:%d", first.tls_port);
    assert_int_not_equal(run_second(xds, tls), 0);
    expect_address_in_use(xds);
    stop_second();
}

static void test_same_tls_port(void **state)
{
    (void)state;
    char tls[64];
    snprintf(tls, sizeof(tls), "127.0.0.1:%d", first.tls_port);
    assert_int_not_equal(run_second("127.0.0.1:0", tls), 0);
    expect_address_in_use(tls);
    stop_second();
}

static void test_first_still_runs(void **state)
{
    (void)state;
    assert_true(first.pid > 0);
    assert_int_equal(waitpid(first.pid, NULL, WNOHANG), 0);
}

static int setup(void **state)
{
    (void)state;
    char error[256];
    if (atriumd_fixture_start(&first, ATRIUMD_PATH, "xdsports", error, sizeof(error)) != 0) {
        fprintf(stderr, "%s\n", error);
        return -1;
    }
    if (first.tls_port <= 0) {
        fprintf(stderr, "no TLS port in atriumd's log\n");
        return -1;
    }
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    stop_second();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    stop_second();
    return atriumd_fixture_stop(&first) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_same_xds_and_tls_ports, test_teardown),
        cmocka_unit_test_teardown(test_same_tls_port, test_teardown),
        cmocka_unit_test(test_first_still_runs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
