/*
 * fuzz_rest_body.c — libFuzzer target for the admin API's request bodies.
 * Every input that parses as JSON is offered to each route that reads a body,
 * as a dry run (validation and canonicalization, no store), exactly the code
 * a remote client reaches with PUT. Build with -DATRIUM_FUZZ=ON and clang.
 */
#include "rest_api.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The body-taking routes, by a concrete path; the health route writes even
 * in a dry run and is left to the integration tests. */
static const char *const paths[] = {
    "/v1/services/reviews",
    "/v1/services/reviews/endpoints",
    "/v1/services/reviews/endpoints/reviews-1",
    "/v1/services/reviews/routes",
    "/v1/services/reviews/policy",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size); /* libFuzzer's entry */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (body == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        rest_call call;
        memset(&call, 0, sizeof(call));
        call.method = "PUT";
        const rest_route *route = NULL;
        char allowed[64];
        if (rest_api_find("PUT", paths[i], &route, &call, allowed, sizeof(allowed)) != REST_MATCHED)
            abort();
        call.body = body;
        call.dry_run = true;
        rest_reply reply;
        rest_api_handle(route, NULL, &call, &reply);
        if (reply.status != 200 && reply.status != 400)
            abort(); /* a dry run either shows the resource or names the problem */
        rest_reply_clear(&reply);
    }
    json_decref(body);
    return 0;
}
