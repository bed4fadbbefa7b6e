/*
 * rest_raw.c — raw TCP clients and /proc readings for the REST adversarial
 * tests. See rest_raw.h.
 */
#include "rest_raw.h"

#include "clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int64_t rest_raw_now_ms(void)
{
    return clock_monotonic_ms();
}

int rest_raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Milliseconds left until deadline_ms, at least 0. */
static int remaining_ms(int64_t deadline_ms)
{
    int64_t left = deadline_ms - rest_raw_now_ms();
    return left > 0 ? (int)(left > 1000000 ? 1000000 : left) : 0;
}

size_t rest_raw_send_until_answer(int fd, const char *data, size_t length, int64_t deadline_ms,
                                  bool *answered)
{
    size_t sent = 0;
    *answered = false;
    while (sent < length) {
        struct pollfd wait = {.fd = fd, .events = POLLIN | POLLOUT};
        int ready = poll(&wait, 1, remaining_ms(deadline_ms));
        if (ready <= 0)
            break; /* the deadline */
        if (wait.revents & (POLLIN | POLLHUP | POLLERR)) {
            *answered = true;
            break;
        }
        ssize_t wrote = send(fd, data + sent, length - sent, MSG_NOSIGNAL);
        if (wrote < 0 && errno != EAGAIN && errno != EINTR) {
            *answered = true; /* reset or closed by the server */
            break;
        }
        if (wrote > 0)
            sent += (size_t)wrote;
    }
    return sent;
}

bool rest_raw_wait_readable(int fd, int64_t deadline_ms)
{
    struct pollfd wait = {.fd = fd, .events = POLLIN};
    for (;;) {
        int ready = poll(&wait, 1, remaining_ms(deadline_ms));
        if (ready > 0)
            return true;
        if (ready == 0 || errno != EINTR)
            return false;
    }
}

char *rest_raw_read_some(int fd, int64_t deadline_ms, size_t max)
{
    if (!rest_raw_wait_readable(fd, deadline_ms))
        return NULL;
    char *text = calloc(1, max);
    if (text == NULL)
        return NULL;
    size_t length = 0;
    while (length + 1 < max) {
        ssize_t got = recv(fd, text + length, max - 1 - length, 0);
        if (got <= 0)
            break; /* nothing more now, closed, or reset */
        length += (size_t)got;
    }
    text[length] = '\0';
    return text;
}

bool rest_raw_wait_closed(int fd, int64_t deadline_ms)
{
    char drop[4096];
    for (;;) {
        if (!rest_raw_wait_readable(fd, deadline_ms))
            return false;
        ssize_t got = recv(fd, drop, sizeof(drop), 0);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR))
            return true;
    }
}

long rest_raw_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *file = fopen(path, "r");
    long rss = -1;
    while (file != NULL && fgets(line, sizeof(line), file) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            rss = strtol(line + 6, NULL, 10);
    }
    if (file)
        fclose(file);
    return rss;
}

double rest_raw_cpu_seconds(pid_t pid)
{
    char path[64], text[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *file = fopen(path, "r");
    size_t got = file ? fread(text, 1, sizeof(text) - 1, file) : 0;
    if (file)
        fclose(file);
    text[got] = '\0';
    /* Fields after the command's closing parenthesis: state is field 3,
     * utime 14 and stime 15. */
    const char *after = strrchr(text, ')');
    if (after == NULL)
        return -1;
    unsigned long long utime = 0, stime = 0;
    if (sscanf(after + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
               &stime) != 2)
        return -1;
    long ticks = sysconf(_SC_CLK_TCK);
    return (double)(utime + stime) / (double)(ticks > 0 ? ticks : 100);
}

size_t rest_raw_count_in_file(const char *path, const char *needle)
{
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return 0;
    size_t count = 0;
    char line[4096];
    while (fgets(line, sizeof(line), file) != NULL) {
        for (const char *at = strstr(line, needle); at != NULL; at = strstr(at + 1, needle))
            count++;
    }
    fclose(file);
    return count;
}

long rest_raw_file_size(const char *path)
{
    struct stat info;
    return stat(path, &info) == 0 ? (long)info.st_size : -1;
}
