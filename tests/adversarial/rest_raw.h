/*
 * rest_raw.h — raw TCP clients of atriumd's admin REST API for the adversarial
 * tests: connections that send what a misbehaving client sends (huge header
 * lines, bodies announced but not sent, nothing at all), with every wait
 * bounded by a deadline, and readings of the server process (RSS, CPU time)
 * from /proc. Only 127.0.0.1 is ever connected to.
 *
 * Ownership: descriptors returned are the caller's (close them); strings
 * returned are malloc'd and the caller frees them.
 */
#ifndef ATRIUM_TESTS_REST_RAW_H
#define ATRIUM_TESTS_REST_RAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Monotonic milliseconds. */
int64_t rest_raw_now_ms(void);

/* A connected, non-blocking socket to 127.0.0.1:port, or -1. */
int rest_raw_connect(int port);

/* Sends up to length bytes, stopping as soon as the server answers or closes
 * (the socket turns readable), the send fails, or deadline_ms passes.
 * Returns the bytes sent; *answered tells whether the server spoke first. */
size_t rest_raw_send_until_answer(int fd, const char *data, size_t length, int64_t deadline_ms,
                                  bool *answered);

/* Waits until the socket is readable (an answer, or the close) or the
 * deadline; true when it is. */
bool rest_raw_wait_readable(int fd, int64_t deadline_ms);

/* Reads what has arrived (waiting until something does, or the deadline),
 * at most max - 1 bytes: a new NUL-terminated string, "" when the peer closed
 * or reset without sending, NULL at the deadline. */
char *rest_raw_read_some(int fd, int64_t deadline_ms, size_t max);

/* Reads and drops everything until the peer closes or resets the
 * connection; true when it did before the deadline. */
bool rest_raw_wait_closed(int fd, int64_t deadline_ms);

/* Resident set size of pid in KiB (VmRSS), or -1. */
long rest_raw_rss_kib(pid_t pid);

/* CPU time (user + system) pid used so far, in seconds, or -1. */
double rest_raw_cpu_seconds(pid_t pid);

/* How many times needle occurs in the file at path (0 when unreadable). */
size_t rest_raw_count_in_file(const char *path, const char *needle);

/* The size of the file at path in bytes, or -1. */
long rest_raw_file_size(const char *path);

#endif
