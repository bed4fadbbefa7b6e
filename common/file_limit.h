/*
 * file_limit.h — the process's open-file limit: raised to the hard limit at
 * start, so a server holds as many connections as the operator allows before
 * accept() fails with EMFILE.
 */
#ifndef ATRIUM_COMMON_FILE_LIMIT_H
#define ATRIUM_COMMON_FILE_LIMIT_H

#include <stdint.h>

/* Raises RLIMIT_NOFILE's soft limit to its hard limit. Returns the soft limit
 * now in force (unchanged when raising failed), or -1 when it cannot be read. */
int64_t file_limit_raise(void);

#endif
