/*
 * string_map.h — a hash map from strings to pointers, for the xDS server's
 * resource tables, subscriptions and versions. Keys are copied; values are
 * the caller's (a free function given at creation releases them).
 */
#ifndef ATRIUM_SERVER_STRING_MAP_H
#define ATRIUM_SERVER_STRING_MAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct string_map string_map;

/* free_value (may be NULL) is called for values that are replaced, removed,
 * or still present when the map is freed. NULL when out of memory. */
string_map *string_map_new(void (*free_value)(void *value));
void string_map_free(string_map *map);

/* The value of key, or NULL. */
void *string_map_get(const string_map *map, const char *key);
/* Sets key to value (replacing and freeing an old value). False when out of memory. */
bool string_map_set(string_map *map, const char *key, void *value);
/* Removes key; true when it was there. */
bool string_map_remove(string_map *map, const char *key);
size_t string_map_count(const string_map *map);

/* Calls visit for every entry, in no particular order; the map must not be
 * changed during the walk. */
void string_map_each(const string_map *map,
                     void (*visit)(const char *key, void *value, void *context), void *context);

#endif
