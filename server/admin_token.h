/*
 * admin_token.h — the admin API's bearer token: created at first start in
 * <data-dir>/admin.token (mode 0600), read back on later starts, and compared
 * in constant time.
 */
#ifndef ATRIUM_SERVER_ADMIN_TOKEN_H
#define ATRIUM_SERVER_ADMIN_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#define ADMIN_TOKEN_FILE   "admin.token"
#define ADMIN_TOKEN_LENGTH 64 /* hex characters: 256 random bits */

/* Reads <data_dir>/admin.token, or creates it with a new random token.
 * token receives ADMIN_TOKEN_LENGTH characters and a NUL; *created tells
 * whether it was made now. A token file readable by group or others, or one
 * that does not hold a token, is refused. Returns 0, or -1 with a reason. */
int admin_token_load_or_create(const char *data_dir, char token[ADMIN_TOKEN_LENGTH + 1],
                               bool *created, char *error, size_t error_size);

/* True when an Authorization header value is "Bearer <token>"; the comparison
 * takes the same time wherever the first difference is. */
bool admin_token_authorizes(const char *token, const char *authorization);

#endif
