/*
 * api_client.h — atriumctl's HTTP client for atriumd's admin API (libcurl).
 * One connection is kept alive across calls.
 */
#ifndef ATRIUM_CLI_API_CLIENT_H
#define ATRIUM_CLI_API_CLIENT_H

#include <jansson.h>
#include <stddef.h>

typedef struct api_client api_client;

/* base_url like "http://127.0.0.1:15080"; token may be NULL. NULL when out
 * of memory. Free with api_client_free. */
api_client *api_client_new(const char *base_url, const char *token);
void api_client_free(api_client *client);

typedef struct api_response {
    long status;     /* HTTP status; 0 when the request failed before one came back */
    json_t *body;    /* parsed JSON body or NULL; owned by the response */
    char *text;      /* raw body (NUL-terminated), owned by the response */
    char error[512]; /* transport failure, when status is 0 */
} api_response;

/* Sends method path (with query, e.g. "/v1/services/x?dry_run=true") with an
 * optional JSON body. Returns 0 when a response came back (any status), -1
 * when none did (response->error says why). Release with api_response_clear. */
int api_client_call(api_client *client, const char *method, const char *path, const json_t *body,
                    api_response *response);
void api_response_clear(api_response *response);

/* The server's error message ("message (field: x)") of a non-2xx response, in
 * buffer. */
const char *api_response_error(const api_response *response, char *buffer, size_t size);

#endif
