/*
 * router.h — where a request goes, decided on a snapshot: the virtual host
 * its Host names, the first route whose path and header conditions match,
 * then one of the route's clusters by weight. No allocation, no locks: this
 * runs for every request.
 */
#ifndef ATRIUM_PROXY_ROUTER_H
#define ATRIUM_PROXY_ROUTER_H

#include "http_codec.h"
#include "proxy_config.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum router_outcome {
    ROUTER_ROUTED = 0,
    ROUTER_NO_ROUTE_TABLE, /* the listener's RDS table has not been received */
    ROUTER_UNKNOWN_HOST,   /* no virtual host for the Host header */
    ROUTER_NO_ROUTE        /* a host, but none of its routes matches */
} router_outcome;

typedef struct router_result {
    router_outcome outcome;
    const proxy_route *route;              /* when ROUTED */
    const proxy_weighted_cluster *cluster; /* when ROUTED: the cluster picked */
} router_result;

/* Routes a request head on table (NULL: not received). random is a uniformly
 * distributed number for the weighted pick. */
router_result router_route(const proxy_route_table *table, const http_head *head, uint64_t random);

/* True when every condition of route (path, headers) holds for head. */
bool router_route_matches(const proxy_route *route, const http_head *head);

#endif
