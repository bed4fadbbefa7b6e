/*
 * atriumd_fixture.c — starts and stops a real atriumd for a test (see
 * atriumd_fixture.h): fork/exec on a fresh data directory, stderr to a log
 * file in it, ports and readiness read from that log, bounded waits, and an
 * atexit handler that SIGKILLs only the pids started here.
 */
#include "atriumd_fixture.h"

#include "error_text.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS  10000
#define POLL_MS          50
#define MAX_RUNNING      8 /* atriumd processes started and not yet reaped */

static const char REST_LISTENING[] = "admin REST API listening on 127.0.0.1:";
static const char CA_LISTENING[] = "CA (CreateCertificate";
static const char XDS_LISTENING[] =
    "xDS (ADS, state of the world and delta, plaintext) listening on 127.0.0.1:";
static const char READY[] = "atriumd: ready";

/* The pids started here and not yet reaped, for the atexit handler. */
static pid_t running[MAX_RUNNING];

void atriumd_fixture_sleep_ms(long ms)
{
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR)
        ;
}

/* Last resort when the test process exits without stopping atriumd: only the
 * children started here, by their pids. */
static void kill_running_at_exit(void)
{
    for (size_t i = 0; i < MAX_RUNNING; i++) {
        if (running[i] > 0) {
            kill(running[i], SIGKILL);
            waitpid(running[i], NULL, 0);
            running[i] = 0;
        }
    }
}

/* Remembers pid for the atexit handler; false when there is no room. */
static bool remember(pid_t pid)
{
    static bool registered = false;
    if (!registered && atexit(kill_running_at_exit) == 0)
        registered = true;
    for (size_t i = 0; i < MAX_RUNNING; i++) {
        if (running[i] == 0) {
            running[i] = pid;
            return true;
        }
    }
    return false;
}

static void forget(pid_t pid)
{
    for (size_t i = 0; i < MAX_RUNNING; i++) {
        if (running[i] == pid)
            running[i] = 0;
    }
}

/* SIGKILL and reap the fixture's atriumd, if it runs. */
static void kill_and_reap(atriumd_fixture *fixture)
{
    if (fixture->pid > 0) {
        kill(fixture->pid, SIGKILL);
        waitpid(fixture->pid, NULL, 0);
        forget(fixture->pid);
        fixture->pid = 0;
    }
}

static int remove_entry(const char *path, const struct stat *info, int flag, struct FTW *walk)
{
    (void)info;
    (void)flag;
    (void)walk;
    return remove(path);
}

/* Removes the data directory (with the log in it) and zeroes *fixture; atriumd
 * must have been reaped. */
static void remove_data_dir(atriumd_fixture *fixture)
{
    if (fixture->data_dir[0] != '\0')
        nftw(fixture->data_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    memset(fixture, 0, sizeof(*fixture));
}

/* The whole log (NUL-terminated, malloc'd: the caller frees it), or NULL. */
static char *read_log(const atriumd_fixture *fixture)
{
    FILE *file = fopen(fixture->log_path, "r");
    if (file == NULL)
        return NULL;
    char *text = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&text, &length);
    if (out != NULL) {
        char chunk[4096];
        size_t got;
        while ((got = fread(chunk, 1, sizeof(chunk), file)) > 0)
            fwrite(chunk, 1, got, out);
        fclose(out);
    }
    fclose(file);
    return text;
}

void atriumd_fixture_print_log(const atriumd_fixture *fixture)
{
    /* Whole: sanitizer reports are long (cmocka's print_error cuts at 1 KiB). */
    char *text = read_log(fixture);
    fprintf(stderr, "atriumd stderr (%s):\n%s\n", fixture->log_path, text ? text : "(unreadable)");
    free(text);
}

/* The port after `prefix` in text, or 0. */
static int port_after(const char *text, const char *prefix)
{
    const char *at = text ? strstr(text, prefix) : NULL;
    return at ? atoi(at + strlen(prefix)) : 0;
}

static bool valid_port(int port)
{
    return port > 0 && port <= 65535;
}

/* Forks and execs atriumd with stderr to log_fd; 0 or -1 (with a message). */
static int spawn(atriumd_fixture *fixture, const char *atriumd_path, int log_fd,
                 unsigned long nofile, const char *const *extra_arguments, char *error,
                 size_t error_size)
{
    enum { FIXED_ARGUMENTS = 9, EXTRA_MAX = 16 };
    const char *arguments[FIXED_ARGUMENTS + EXTRA_MAX + 1] = {
        "atriumd",    "--data-dir",  fixture->data_dir, "--rest-addr", "127.0.0.1:0",
        "--xds-addr", "127.0.0.1:0", "--tls-addr",      "127.0.0.1:0"};
    size_t count = FIXED_ARGUMENTS;
    for (size_t i = 0; extra_arguments != NULL && extra_arguments[i] != NULL; i++) {
        if (i == EXTRA_MAX) {
            error_text(error, error_size, "more than %d extra arguments for atriumd", EXTRA_MAX);
            return -1;
        }
        arguments[count++] = extra_arguments[i];
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        error_text(error, error_size, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* Dies with us, whatever way we die. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int null_fd = open("/dev/null", O_RDWR);
        if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(null_fd, STDOUT_FILENO) < 0 ||
            dup2(log_fd, STDERR_FILENO) < 0)
            _exit(127);
        struct rlimit limit = {nofile, nofile};
        if (nofile != 0 && setrlimit(RLIMIT_NOFILE, &limit) != 0)
            _exit(127);
        execv(atriumd_path, (char *const *)arguments);
        _exit(127);
    }
    fixture->pid = pid;
    if (!remember(pid)) {
        error_text(error, error_size, "more than %d atriumd processes at once", MAX_RUNNING);
        return -1;
    }
    return 0;
}

/* Waits (bounded) for "ready" in the log, then reads both ports from it; 0 or
 * -1 (with a message, and the log printed). */
static int wait_until_ready(atriumd_fixture *fixture, char *error, size_t error_size)
{
    for (int waited = 0; waited <= START_TIMEOUT_MS; waited += POLL_MS) {
        char *text = read_log(fixture);
        bool ready = text != NULL && strstr(text, READY) != NULL;
        if (ready) {
            fixture->rest_port = port_after(text, REST_LISTENING);
            fixture->xds_port = port_after(text, XDS_LISTENING);
            const char *authority = text ? strstr(text, CA_LISTENING) : NULL;
            fixture->tls_port = port_after(authority, " listening on 127.0.0.1:");
        }
        free(text);
        if (ready)
            break;
        int status;
        if (waitpid(fixture->pid, &status, WNOHANG) == fixture->pid) {
            forget(fixture->pid);
            fixture->pid = 0;
            error_text(error, error_size, "atriumd exited before it was ready");
            atriumd_fixture_print_log(fixture);
            return -1;
        }
        atriumd_fixture_sleep_ms(POLL_MS);
    }
    if (!valid_port(fixture->rest_port) || !valid_port(fixture->xds_port)) {
        error_text(error, error_size, "atriumd did not log ready and both ports within %d ms",
                   START_TIMEOUT_MS);
        atriumd_fixture_print_log(fixture);
        return -1;
    }
    return 0;
}

static int read_token(atriumd_fixture *fixture, char *error, size_t error_size)
{
    char token_path[128];
    snprintf(token_path, sizeof(token_path), "%s/admin.token", fixture->data_dir);
    FILE *file = fopen(token_path, "r");
    size_t got = file ? fread(fixture->token, 1, ATRIUMD_FIXTURE_TOKEN_LENGTH, file) : 0;
    if (file)
        fclose(file);
    fixture->token[got] = '\0';
    if (got != ATRIUMD_FIXTURE_TOKEN_LENGTH) {
        error_text(error, error_size, "cannot read a %d-character token from %s",
                   ATRIUMD_FIXTURE_TOKEN_LENGTH, token_path);
        return -1;
    }
    return 0;
}

/* atriumd_fixture_start_nofile and _with_arguments: both at once. */
static int start_atriumd(atriumd_fixture *out, const char *atriumd_path, const char *name,
                         unsigned long nofile, const char *const *extra_arguments, char *error,
                         size_t error_size)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->data_dir, sizeof(out->data_dir), "/tmp/atrium-%s-XXXXXX", name);
    if (mkdtemp(out->data_dir) == NULL) {
        error_text(error, error_size, "mkdtemp %s: %s", out->data_dir, strerror(errno));
        out->data_dir[0] = '\0';
        return -1;
    }
    snprintf(out->log_path, sizeof(out->log_path), "%s/atriumd.stderr", out->data_dir);
    int log_fd = open(out->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        error_text(error, error_size, "cannot create %s: %s", out->log_path, strerror(errno));
        remove_data_dir(out);
        return -1;
    }
    int spawned = spawn(out, atriumd_path, log_fd, nofile, extra_arguments, error, error_size);
    close(log_fd);
    if (spawned != 0 || wait_until_ready(out, error, error_size) != 0 ||
        read_token(out, error, error_size) != 0) {
        kill_and_reap(out);
        remove_data_dir(out);
        return -1;
    }
    return 0;
}

int atriumd_fixture_start(atriumd_fixture *out, const char *atriumd_path, const char *name,
                          char *error, size_t error_size)
{
    return start_atriumd(out, atriumd_path, name, 0, NULL, error, error_size);
}

int atriumd_fixture_start_nofile(atriumd_fixture *out, const char *atriumd_path, const char *name,
                                 unsigned long nofile, char *error, size_t error_size)
{
    return start_atriumd(out, atriumd_path, name, nofile, NULL, error, error_size);
}

int atriumd_fixture_start_with_arguments(atriumd_fixture *out, const char *atriumd_path,
                                         const char *name, const char *const *extra_arguments,
                                         char *error, size_t error_size)
{
    return start_atriumd(out, atriumd_path, name, 0, extra_arguments, error, error_size);
}

/* SIGTERM, then waits (bounded). Returns the wait status, or -1 when it had
 * to be killed. */
static int terminate(atriumd_fixture *fixture)
{
    kill(fixture->pid, SIGTERM);
    for (int waited = 0; waited <= STOP_TIMEOUT_MS; waited += POLL_MS) {
        int status;
        if (waitpid(fixture->pid, &status, WNOHANG) == fixture->pid) {
            forget(fixture->pid);
            fixture->pid = 0;
            return status;
        }
        atriumd_fixture_sleep_ms(POLL_MS);
    }
    fprintf(stderr, "atriumd did not stop within %d ms of SIGTERM; killing it\n", STOP_TIMEOUT_MS);
    kill_and_reap(fixture);
    return -1;
}

int atriumd_fixture_stop(atriumd_fixture *fixture)
{
    if (fixture->pid <= 0 && fixture->log_path[0] == '\0')
        return -1; /* zeroed: nothing was started, or it was stopped already */
    int status = -1;
    if (fixture->pid <= 0)
        fprintf(stderr, "atriumd was not running\n");
    else if ((status = terminate(fixture)) == -1)
        fprintf(stderr, "atriumd was not stopped by SIGTERM\n");
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        fprintf(stderr, "atriumd exited with status %d\n", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        fprintf(stderr, "atriumd was killed by signal %d\n", WTERMSIG(status));
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        atriumd_fixture_print_log(fixture);
    remove_data_dir(fixture);
    return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
