/*
 * settings.c — defaults < JSON config file < flags, driven by a table of
 * settings (see settings.h).
 */
#include "settings.h"

#include "address.h"
#include "log.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Finds a setting by flag or config key; '_' and '-' are the same. */
static const settings_entry *find_entry(const settings_entry *table, size_t count, const char *name)
{
    for (size_t i = 0; i < count; i++) {
        const char *want = table[i].name;
        size_t j = 0;
        for (; want[j] != '\0' && name[j] != '\0'; j++)
            if ((name[j] == '_' ? '-' : name[j]) != want[j])
                break;
        if (want[j] == '\0' && name[j] == '\0')
            return &table[i];
    }
    return NULL;
}

/* Checks value for the entry and stores it. source says where it came from
 * ("option", "config FILE:") for the message. */
static int apply(const settings_entry *entry, const char *value, void *out, const char *source,
                 char *error, size_t error_size)
{
    char *field = (char *)out + entry->offset;
    switch (entry->kind) {
    case SETTINGS_INTEGER: {
        char *end = NULL;
        long number = strtol(value, &end, 10);
        if (value[0] == '\0' || *end != '\0' || number < entry->minimum ||
            number > entry->maximum) {
            snprintf(error, error_size, "%s %s: '%s' must be a number%s%s %ld-%ld", source,
                     entry->name, value, entry->unit ? " of " : "", entry->unit ? entry->unit : "",
                     entry->minimum, entry->maximum);
            return -1;
        }
        if (entry->size == sizeof(uint16_t))
            *(uint16_t *)field = (uint16_t)number;
        else
            *(int *)field = (int)number;
        return 0;
    }
    case SETTINGS_SWITCH:
        if (strcmp(value, entry->off_word) != 0 && strcmp(value, entry->on_word) != 0) {
            snprintf(error, error_size, "%s %s: '%s' must be %s or %s", source, entry->name, value,
                     entry->off_word, entry->on_word);
            return -1;
        }
        *(bool *)field = strcmp(value, entry->on_word) == 0;
        return 0;
    case SETTINGS_LOG_LEVEL: {
        log_level ignored;
        if (log_level_parse(value, &ignored) != 0) {
            snprintf(error, error_size, "%s %s: '%s' must be debug, info, warn or error", source,
                     entry->name, value);
            return -1;
        }
        break;
    }
    case SETTINGS_ADDRESS: {
        char host[256], reason[256];
        uint16_t port;
        if (address_split(value, host, sizeof(host), &port, reason, sizeof(reason)) != 0) {
            snprintf(error, error_size, "%s %s: %s", source, entry->name, reason);
            return -1;
        }
        break;
    }
    case SETTINGS_TEXT:
        if (value[0] == '\0') {
            snprintf(error, error_size, "%s %s: must not be empty", source, entry->name);
            return -1;
        }
        break;
    }
    if (strlen(value) >= entry->size) {
        snprintf(error, error_size, "%s %s: value too long", source, entry->name);
        return -1;
    }
    memcpy(field, value, strlen(value) + 1);
    return 0;
}

static int load_config_file(const settings_entry *table, size_t count, const char *path, void *out,
                            char *error, size_t error_size)
{
    json_error_t parse_error;
    json_t *document = json_load_file(path, JSON_REJECT_DUPLICATES, &parse_error);
    if (document == NULL) {
        snprintf(error, error_size, "config %s:%d:%d: %s", path, parse_error.line,
                 parse_error.column, parse_error.text);
        return -1;
    }
    int result = 0;
    if (!json_is_object(document)) {
        snprintf(error, error_size, "config %s: must be a JSON object of settings", path);
        result = -1;
    }
    char source[1100];
    snprintf(source, sizeof(source), "config %s:", path);
    const char *key;
    json_t *value;
    json_object_foreach(document, key, value)
    {
        if (result != 0)
            break;
        const settings_entry *entry = find_entry(table, count, key);
        char number[32];
        if (entry == NULL) {
            snprintf(error, error_size, "config %s: unknown setting '%s'", path, key);
            result = -1;
        } else if (entry->kind == SETTINGS_INTEGER && json_is_integer(value)) {
            snprintf(number, sizeof(number), "%lld", (long long)json_integer_value(value));
            result = apply(entry, number, out, source, error, error_size);
        } else if (!json_is_string(value)) {
            snprintf(error, error_size, "config %s: '%s' must be a string%s", path, key,
                     entry->kind == SETTINGS_INTEGER ? " or a number" : "");
            result = -1;
        } else {
            result = apply(entry, json_string_value(value), out, source, error, error_size);
        }
    }
    json_decref(document);
    return result;
}

int settings_parse(const settings_entry *table, size_t count, int argc, char **argv, void *out,
                   bool *show_help, char *error, size_t error_size)
{
    *show_help = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *show_help = true;
            return 0;
        }
    }
    /* The config file first, so that flags override it. */
    for (int i = 1; i < argc; i++) {
        const char *config = NULL;
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf(error, error_size, "--config needs a file name");
                return -1;
            }
            config = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config = argv[i] + 9;
        }
        if (config != NULL && load_config_file(table, count, config, out, error, error_size) != 0)
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *argument = argv[i];
        if (strncmp(argument, "--", 2) != 0) {
            snprintf(error, error_size, "unexpected argument '%s' (see --help)", argument);
            return -1;
        }
        char name[64];
        const char *equals = strchr(argument, '=');
        size_t name_length = equals ? (size_t)(equals - argument - 2) : strlen(argument + 2);
        if (name_length >= sizeof(name)) {
            snprintf(error, error_size, "unknown option '%s' (see --help)", argument);
            return -1;
        }
        memcpy(name, argument + 2, name_length);
        name[name_length] = '\0';
        const char *value = equals ? equals + 1 : NULL;
        if (strcmp(name, "config") == 0) {
            if (value == NULL)
                i++;
            continue;
        }
        const settings_entry *entry = find_entry(table, count, name);
        if (entry == NULL || strchr(name, '_') != NULL) {
            snprintf(error, error_size, "unknown option '--%s' (see --help)", name);
            return -1;
        }
        if (value == NULL) {
            if (i + 1 >= argc) {
                snprintf(error, error_size, "--%s needs a value", name);
                return -1;
            }
            value = argv[++i];
        }
        if (apply(entry, value, out, "option", error, error_size) != 0)
            return -1;
    }
    return 0;
}
