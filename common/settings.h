/*
 * settings.h — a program's settings from three sources, in order of
 * precedence: defaults (already in the struct), a JSON config file named by
 * --config, then command-line flags. A table says, per setting, its flag name,
 * what kind of value it takes and where in the caller's struct it goes; the
 * config file uses the flag names as keys (dashes or underscores). Unknown
 * flags or keys, missing values and bad values are errors that name the flag
 * or key; nothing is ignored. atriumd and atrium-proxy both parse with it.
 */
#ifndef ATRIUM_COMMON_SETTINGS_H
#define ATRIUM_COMMON_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

typedef enum settings_kind {
    SETTINGS_TEXT,      /* a non-empty string, into char[size] */
    SETTINGS_ADDRESS,   /* "host:port", into char[size] */
    SETTINGS_LOG_LEVEL, /* debug, info, warn or error, into char[size] */
    SETTINGS_INTEGER,   /* minimum..maximum, into an int/unsigned (size 4) or uint16_t (size 2);
                           a JSON number or string in the config file */
    SETTINGS_SWITCH     /* off_word or on_word, into a bool */
} settings_kind;

typedef struct settings_entry {
    const char *name; /* the flag without "--", with dashes */
    settings_kind kind;
    size_t offset;                  /* of the field in the caller's struct */
    size_t size;                    /* of the field */
    long minimum, maximum;          /* SETTINGS_INTEGER */
    const char *unit;               /* SETTINGS_INTEGER, for messages ("milliseconds"), or NULL */
    const char *off_word, *on_word; /* SETTINGS_SWITCH */
} settings_entry;

/* Fills the fields of out named by the table from the --config file (if any)
 * and then from the flags in argv (not modified). --help or -h anywhere sets
 * *show_help and stops there. Returns 0, or -1 with a message in error. */
int settings_parse(const settings_entry *table, size_t count, int argc, char **argv, void *out,
                   bool *show_help, char *error, size_t error_size);

#endif
