/*
 * apply.h — `atriumctl apply`: makes the mesh match a declarative document.
 *
 *   services:
 *     - name: reviews            # the service's fields, as PUT /v1/services/{name}
 *       protocol: http
 *       endpoints: [ {id: r1, address: 127.0.0.1, port: 9080, labels: {version: v1}} ]
 *       routes: {rules: [ ... ]} # as PUT .../routes
 *       policy: {default: allow} # as PUT .../policy
 *
 * For each part the server first canonicalizes the desired state (?dry_run=true,
 * which also validates it); the part is written only when that differs from
 * what the server has, so applying the same file twice changes nothing.
 * endpoints, routes and policy are managed only when the file names them;
 * services absent from the file are left alone.
 */
#ifndef ATRIUM_CLI_APPLY_H
#define ATRIUM_CLI_APPLY_H

#include "api_client.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* Prints one line per part ("service/reviews created", "routes/reviews
 * unchanged"). With dry_run nothing is written. Returns 0, or -1 with the
 * reason in error (the parts before it were applied). */
int apply_mesh(api_client *client, const json_t *mesh, bool dry_run, FILE *out, char *error,
               size_t error_size);

#endif
