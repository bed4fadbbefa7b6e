/*
 * yaml_json.c — YAML to JSON with libyaml's event parser. A stack of open
 * containers (mappings and sequences) receives each scalar; a mapping
 * alternates key and value.
 */
#include "yaml_json.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define DEPTH_MAX 64

typedef struct frame {
    json_t *container;
    char *pending_key; /* mappings: the key waiting for its value */
} frame;

/* Resolves a plain scalar by the YAML 1.2 core schema. */
static json_t *plain_scalar(const char *text)
{
    if (text[0] == '\0' || strcmp(text, "~") == 0 || strcmp(text, "null") == 0 ||
        strcmp(text, "Null") == 0 || strcmp(text, "NULL") == 0)
        return json_null();
    if (strcmp(text, "true") == 0 || strcmp(text, "True") == 0 || strcmp(text, "TRUE") == 0)
        return json_true();
    if (strcmp(text, "false") == 0 || strcmp(text, "False") == 0 || strcmp(text, "FALSE") == 0)
        return json_false();
    char *end = NULL;
    errno = 0;
    long long integer = strtoll(text, &end, 10);
    if (*end == '\0' && errno == 0 &&
        (text[0] == '-' || text[0] == '+' || (text[0] >= '0' && text[0] <= '9')))
        return json_integer(integer);
    double real = strtod(text, &end);
    if (*end == '\0' && errno == 0 && isfinite(real) &&
        strspn(text, "+-0123456789.eE") == strlen(text))
        return json_real(real);
    return json_string(text);
}

/* Adds value to the innermost open container (or makes it the root). */
static bool attach(frame *stack, size_t depth, json_t **root, json_t *value, bool is_scalar,
                   char *error, size_t error_size)
{
    if (value == NULL) {
        snprintf(error, error_size, "out of memory");
        return false;
    }
    if (depth == 0) {
        *root = value;
        return true;
    }
    frame *top = &stack[depth - 1];
    if (json_is_array(top->container))
        return json_array_append_new(top->container, value) == 0;
    if (top->pending_key == NULL) {
        if (!is_scalar || !json_is_string(value)) {
            json_t *text = value;
            /* Keys must be scalars; numbers and booleans are fine as text. */
            if (!is_scalar) {
                json_decref(value);
                snprintf(error, error_size, "mapping keys must be scalars");
                return false;
            }
            char *dumped = json_dumps(text, JSON_ENCODE_ANY);
            json_decref(text);
            top->pending_key = dumped;
            return dumped != NULL;
        }
        top->pending_key = strdup(json_string_value(value));
        json_decref(value);
        return top->pending_key != NULL;
    }
    if (json_object_get(top->container, top->pending_key) != NULL) {
        snprintf(error, error_size, "duplicate key '%s'", top->pending_key);
        json_decref(value);
        return false;
    }
    json_object_set_new(top->container, top->pending_key, value);
    free(top->pending_key);
    top->pending_key = NULL;
    return true;
}

static json_t *load(yaml_parser_t *parser, char *error, size_t error_size)
{
    frame stack[DEPTH_MAX];
    size_t depth = 0;
    json_t *root = NULL;
    bool done = false, failed = false;
    while (!done && !failed) {
        yaml_event_t event;
        if (!yaml_parser_parse(parser, &event)) {
            snprintf(error, error_size, "line %zu, column %zu: %s", parser->problem_mark.line + 1,
                     parser->problem_mark.column + 1,
                     parser->problem ? parser->problem : "malformed YAML");
            failed = true;
            break;
        }
        size_t line = event.start_mark.line + 1, column = event.start_mark.column + 1;
        char reason[256] = "";
        switch (event.type) {
        case YAML_SCALAR_EVENT: {
            const char *text = (const char *)event.data.scalar.value;
            json_t *value = event.data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? plain_scalar(text)
                                                                               : json_string(text);
            failed = !attach(stack, depth, &root, value, true, reason, sizeof(reason));
            break;
        }
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            if (depth == DEPTH_MAX) {
                snprintf(reason, sizeof(reason), "nested deeper than %d", DEPTH_MAX);
                failed = true;
                break;
            }
            json_t *container =
                event.type == YAML_SEQUENCE_START_EVENT ? json_array() : json_object();
            json_incref(container);
            failed = !attach(stack, depth, &root, container, false, reason, sizeof(reason));
            if (failed) {
                json_decref(container);
                break;
            }
            stack[depth++] = (frame){container, NULL};
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth == 0) { /* libyaml pairs every end with a start; never trust it blindly */
                snprintf(reason, sizeof(reason), "an end without a start");
                failed = true;
                break;
            }
            depth--;
            free(stack[depth].pending_key);
            json_decref(stack[depth].container);
            break;
        case YAML_ALIAS_EVENT:
            snprintf(reason, sizeof(reason), "aliases (*name) are not supported");
            failed = true;
            break;
        case YAML_DOCUMENT_END_EVENT:
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        default:
            break;
        }
        if (failed && reason[0] != '\0')
            snprintf(error, error_size, "line %zu, column %zu: %s", line, column, reason);
        yaml_event_delete(&event);
    }
    while (depth > 0) {
        depth--;
        free(stack[depth].pending_key);
        json_decref(stack[depth].container);
    }
    if (failed) {
        json_decref(root);
        return NULL;
    }
    if (root == NULL)
        snprintf(error, error_size, "empty document");
    return root;
}

json_t *yaml_json_load(FILE *file, char *error, size_t error_size)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_file(&parser, file);
    json_t *root = load(&parser, error, error_size);
    yaml_parser_delete(&parser);
    return root;
}

json_t *yaml_json_parse(const char *text, size_t length, char *error, size_t error_size)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, length);
    json_t *root = load(&parser, error, error_size);
    yaml_parser_delete(&parser);
    return root;
}
