/*
 * yaml_json.h — reads a YAML (or JSON) document into a jansson value, so that
 * atriumctl can take either for any body. Plain scalars become numbers,
 * booleans or null when they look like one (YAML 1.2 core schema); quoted
 * scalars stay strings. Anchors and aliases are refused.
 */
#ifndef ATRIUM_CLI_YAML_JSON_H
#define ATRIUM_CLI_YAML_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

/* Parses the first document of file. Returns a new reference, or NULL with
 * "line L, column C: reason" in error. */
json_t *yaml_json_load(FILE *file, char *error, size_t error_size);

/* The same from a string of the given length. */
json_t *yaml_json_parse(const char *text, size_t length, char *error, size_t error_size);

#endif
