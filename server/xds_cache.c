/*
 * xds_cache.c — one string_map per resource type, from name to cache_entry.
 */
#include "xds_cache.h"

#include "string_map.h"

#include <stdlib.h>
#include <string.h>

struct xds_cache {
    string_map *tables[XDS_TYPE_COUNT];
};

static void entry_free(void *value)
{
    cache_entry *entry = value;
    if (entry == NULL)
        return;
    free(entry->name);
    free(entry->bytes);
    free(entry->owner);
    free(entry);
}

xds_cache *xds_cache_new(void)
{
    xds_cache *cache = calloc(1, sizeof(*cache));
    for (int type = 0; cache != NULL && type < XDS_TYPE_COUNT; type++) {
        cache->tables[type] = string_map_new(entry_free);
        if (cache->tables[type] == NULL) {
            xds_cache_free(cache);
            return NULL;
        }
    }
    return cache;
}

void xds_cache_free(xds_cache *cache)
{
    if (cache == NULL)
        return;
    for (int type = 0; type < XDS_TYPE_COUNT; type++)
        string_map_free(cache->tables[type]);
    free(cache);
}

const cache_entry *xds_cache_get(const xds_cache *cache, xds_type type, const char *name)
{
    return string_map_get(cache->tables[type], name);
}

size_t xds_cache_count(const xds_cache *cache, xds_type type)
{
    return string_map_count(cache->tables[type]);
}

typedef struct each_walk {
    void (*visit)(const cache_entry *entry, void *context);
    void *context;
} each_walk;

static void visit_entry(const char *key, void *value, void *context)
{
    (void)key;
    each_walk *walk = context;
    walk->visit(value, walk->context);
}

void xds_cache_each(const xds_cache *cache, xds_type type,
                    void (*visit)(const cache_entry *entry, void *context), void *context)
{
    each_walk walk = {visit, context};
    string_map_each(cache->tables[type], visit_entry, &walk);
}

/* Names of the owner's entries that the new list no longer has. */
typedef struct stale_walk {
    const char *owner;
    const xds_resource_list *resources;
    xds_type type;
    char **names;
    size_t count;
    bool failed;
} stale_walk;

static void find_stale(const char *key, void *value, void *context)
{
    stale_walk *walk = context;
    const cache_entry *entry = value;
    if (entry->owner == NULL || strcmp(entry->owner, walk->owner) != 0)
        return;
    for (size_t i = 0; i < walk->resources->count; i++) {
        const xds_resource *resource = &walk->resources->items[i];
        if (resource->type == walk->type && strcmp(resource->name, key) == 0)
            return;
    }
    char **grown = realloc(walk->names, (walk->count + 1) * sizeof(char *));
    if (grown == NULL || (grown[walk->count] = strdup(key)) == NULL) {
        walk->names = grown ? grown : walk->names;
        walk->failed = true;
        return;
    }
    walk->names = grown;
    walk->count++;
}

int xds_cache_replace_owner(xds_cache *cache, const char *owner, xds_resource_list *resources,
                            xds_change_callback changed, void *context)
{
    int result = 0;
    for (int type = 0; type < XDS_TYPE_COUNT; type++) {
        stale_walk walk = {owner, resources, (xds_type)type, NULL, 0, false};
        string_map_each(cache->tables[type], find_stale, &walk);
        for (size_t i = 0; i < walk.count; i++) {
            string_map_remove(cache->tables[type], walk.names[i]);
            if (changed)
                changed((xds_type)type, walk.names[i], context);
            free(walk.names[i]);
        }
        free(walk.names);
        if (walk.failed)
            result = -1;
    }
    for (size_t i = 0; i < resources->count; i++) {
        xds_resource *resource = &resources->items[i];
        const cache_entry *existing = string_map_get(cache->tables[resource->type], resource->name);
        char version[17];
        xds_version_text(resource->hash, version);
        if (existing != NULL && strcmp(existing->version, version) == 0 &&
            strcmp(existing->owner, owner) == 0)
            continue; /* the same bytes: nothing to push */
        cache_entry *entry = calloc(1, sizeof(*entry));
        if (entry == NULL || (entry->owner = strdup(owner)) == NULL) {
            free(entry);
            result = -1;
            continue;
        }
        entry->type = resource->type;
        entry->name = resource->name;
        entry->bytes = resource->bytes;
        entry->length = resource->length;
        memcpy(entry->version, version, sizeof(version));
        resource->name = NULL;
        resource->bytes = NULL;
        if (!string_map_set(cache->tables[entry->type], entry->name, entry)) {
            entry_free(entry);
            result = -1;
            continue;
        }
        if (changed)
            changed(entry->type, entry->name, context);
    }
    xds_resource_list_clear(resources);
    return result;
}
