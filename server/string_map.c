/*
 * string_map.c — separate chaining over a power-of-two bucket array that
 * doubles when the load passes 1; hash is xxHash64 of the key.
 */
#include "string_map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    void *value;
    char key[];
} entry;

struct string_map {
    entry **buckets;
    size_t bucket_count; /* a power of two */
    size_t count;
    void (*free_value)(void *value);
};

string_map *string_map_new(void (*free_value)(void *value))
{
    string_map *map = calloc(1, sizeof(*map));
    if (map == NULL)
        return NULL;
    map->bucket_count = 8;
    map->buckets = calloc(map->bucket_count, sizeof(entry *));
    if (map->buckets == NULL) {
        free(map);
        return NULL;
    }
    map->free_value = free_value;
    return map;
}

void string_map_free(string_map *map)
{
    if (map == NULL)
        return;
    for (size_t b = 0; b < map->bucket_count; b++) {
        entry *item = map->buckets[b];
        while (item != NULL) {
            entry *next = item->next;
            if (map->free_value)
                map->free_value(item->value);
            free(item);
            item = next;
        }
    }
    free(map->buckets);
    free(map);
}

static entry **slot(const string_map *map, const char *key, uint64_t hash)
{
    entry **link = &map->buckets[hash & (map->bucket_count - 1)];
    while (*link != NULL && ((*link)->hash != hash || strcmp((*link)->key, key) != 0))
        link = &(*link)->next;
    return link;
}

void *string_map_get(const string_map *map, const char *key)
{
    entry *found = *slot(map, key, XXH64(key, strlen(key), 0));
    return found ? found->value : NULL;
}

static void grow(string_map *map)
{
    size_t count = map->bucket_count * 2;
    entry **buckets = calloc(count, sizeof(entry *));
    if (buckets == NULL)
        return; /* stays correct, only slower */
    for (size_t b = 0; b < map->bucket_count; b++) {
        entry *item = map->buckets[b];
        while (item != NULL) {
            entry *next = item->next;
            item->next = buckets[item->hash & (count - 1)];
            buckets[item->hash & (count - 1)] = item;
            item = next;
        }
    }
    free(map->buckets);
    map->buckets = buckets;
    map->bucket_count = count;
}

bool string_map_set(string_map *map, const char *key, void *value)
{
    uint64_t hash = XXH64(key, strlen(key), 0);
    entry **link = slot(map, key, hash);
    if (*link != NULL) {
        if (map->free_value && (*link)->value != value)
            map->free_value((*link)->value);
        (*link)->value = value;
        return true;
    }
    size_t length = strlen(key);
    entry *item = malloc(sizeof(entry) + length + 1);
    if (item == NULL)
        return false;
    memcpy(item->key, key, length + 1);
    item->hash = hash;
    item->value = value;
    item->next = NULL;
    *link = item;
    if (++map->count > map->bucket_count)
        grow(map);
    return true;
}

bool string_map_remove(string_map *map, const char *key)
{
    entry **link = slot(map, key, XXH64(key, strlen(key), 0));
    entry *item = *link;
    if (item == NULL)
        return false;
    *link = item->next;
    if (map->free_value)
        map->free_value(item->value);
    free(item);
    map->count--;
    return true;
}

size_t string_map_count(const string_map *map)
{
    return map->count;
}

void string_map_each(const string_map *map,
                     void (*visit)(const char *key, void *value, void *context), void *context)
{
    for (size_t b = 0; b < map->bucket_count; b++) {
        for (entry *item = map->buckets[b]; item != NULL; item = item->next)
            visit(item->key, item->value, context);
    }
}
