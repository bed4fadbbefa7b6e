/*
 * xds_cache.h — packed xDS resources by type and name, each with its version
 * (the hash of its bytes) and the owner that produced it (a service, or a
 * proxy profile). The bytes of a version are packed once and shared by every
 * stream that is sent the resource. Not thread-safe: the xDS thread owns it.
 */
#ifndef ATRIUM_SERVER_XDS_CACHE_H
#define ATRIUM_SERVER_XDS_CACHE_H

#include "translator.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct cache_entry {
    xds_type type;
    char *name;
    char version[17];
    uint8_t *bytes; /* the packed resource message */
    size_t length;
    char *owner;
} cache_entry;

typedef struct xds_cache xds_cache;

/* NULL when out of memory; free with xds_cache_free (NULL accepted). */
xds_cache *xds_cache_new(void);
void xds_cache_free(xds_cache *cache);

const cache_entry *xds_cache_get(const xds_cache *cache, xds_type type, const char *name);
size_t xds_cache_count(const xds_cache *cache, xds_type type);
void xds_cache_each(const xds_cache *cache, xds_type type,
                    void (*visit)(const cache_entry *entry, void *context), void *context);

/* Called for each resource that appeared, changed version, or disappeared. */
typedef void (*xds_change_callback)(xds_type type, const char *name, void *context);

/* Makes the resources owned by `owner` exactly `resources` (whose items are
 * taken: the list is emptied): new or changed ones are stored, the owner's
 * others removed; identical ones keep their entry. changed (may be NULL) hears
 * of every difference. Returns 0, or -1 when out of memory. */
int xds_cache_replace_owner(xds_cache *cache, const char *owner, xds_resource_list *resources,
                            xds_change_callback changed, void *context);

#endif
