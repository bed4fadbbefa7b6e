/*
 * router.c — route matching as Envoy does it for the fields Atrium uses
 * (see router.h): prefix or exact path (exact ignores the query string),
 * case sensitivity, header conditions, weighted clusters.
 */
#include "router.h"

#include <string.h>
#include <strings.h>

static bool header_matches(const proxy_header_match *match, const http_head *head)
{
    size_t name_length = strlen(match->name);
    const http_text *value = NULL;
    for (size_t i = 0; i < head->header_count && value == NULL; i++) {
        const http_text *name = &head->headers[i].name;
        if (name->length == name_length && strncasecmp(name->data, match->name, name_length) == 0)
            value = &head->headers[i].value;
    }
    bool matched = false;
    if (value != NULL) {
        /* value is NULL only for PRESENT, which compares nothing: "" keeps
         * the comparisons' pointers valid whatever the kind. */
        const char *expected = match->value != NULL ? match->value : "";
        size_t length = strlen(expected);
        int (*compare)(const char *, const char *, size_t) =
            match->ignore_case ? strncasecmp : strncmp;
        switch (match->kind) {
        case PROXY_HEADER_PRESENT:
            matched = true;
            break;
        case PROXY_HEADER_EXACT:
            matched = value->length == length && compare(value->data, expected, length) == 0;
            break;
        case PROXY_HEADER_PREFIX:
            matched = value->length >= length && compare(value->data, expected, length) == 0;
            break;
        case PROXY_HEADER_SUFFIX:
            matched = value->length >= length &&
                      compare(value->data + value->length - length, expected, length) == 0;
            break;
        case PROXY_HEADER_CONTAINS:
            for (size_t at = 0; !matched && at + length <= value->length; at++)
                matched = compare(value->data + at, expected, length) == 0;
            break;
        }
    }
    return matched != match->invert;
}

/* The path of a request target: origin form as is; for an absolute form
 * ("http://host/a?b") the part from the first '/' after the authority, or
 * "/" when there is none. */
static http_text target_path(http_text target)
{
    if (target.length == 0 || target.data[0] == '/')
        return target;
    const char *end = target.data + target.length;
    const char *scheme = memchr(target.data, ':', target.length);
    if (scheme == NULL || end - scheme < 3 || scheme[1] != '/' || scheme[2] != '/')
        return target; /* authority or asterisk form: matched as is */
    const char *authority = scheme + 3;
    const char *slash = memchr(authority, '/', (size_t)(end - authority));
    if (slash == NULL)
        return (http_text){"/", 1};
    return (http_text){slash, (size_t)(end - slash)};
}

bool router_route_matches(const proxy_route *route, const http_head *head)
{
    http_text path = target_path(head->target);
    int (*compare)(const char *, const char *, size_t) =
        route->case_sensitive ? strncmp : strncasecmp;
    if (route->path_match == PROXY_PATH_PREFIX) {
        if (path.length < route->path_length ||
            compare(path.data, route->path, route->path_length) != 0)
            return false;
    } else {
        const char *query = memchr(path.data, '?', path.length);
        size_t length = query != NULL ? (size_t)(query - path.data) : path.length;
        if (length != route->path_length || compare(path.data, route->path, length) != 0)
            return false;
    }
    for (size_t i = 0; i < route->header_count; i++)
        if (!header_matches(&route->headers[i], head))
            return false;
    return true;
}

router_result router_route(const proxy_route_table *table, const http_head *head, uint64_t random)
{
    router_result result = {ROUTER_NO_ROUTE_TABLE, NULL, NULL};
    if (table == NULL)
        return result;
    const proxy_virtual_host *host =
        proxy_route_table_find_host(table, head->host.data, head->host.length);
    if (host == NULL) {
        result.outcome = ROUTER_UNKNOWN_HOST;
        return result;
    }
    for (size_t i = 0; i < host->route_count && result.route == NULL; i++)
        if (router_route_matches(&host->routes[i], head))
            result.route = &host->routes[i];
    if (result.route == NULL || result.route->cluster_count == 0) {
        result.outcome = ROUTER_NO_ROUTE;
        result.route = NULL;
        return result;
    }
    const proxy_route *route = result.route;
    result.outcome = ROUTER_ROUTED;
    result.cluster = &route->clusters[0];
    if (route->cluster_count > 1 && route->total_weight > 0) {
        uint64_t point = random % route->total_weight;
        for (size_t i = 0; i < route->cluster_count; i++) {
            if (point < route->clusters[i].weight) {
                result.cluster = &route->clusters[i];
                break;
            }
            point -= route->clusters[i].weight;
        }
    }
    return result;
}
