/*
 * table.h — aligned text tables for atriumctl's human output.
 */
#ifndef ATRIUM_CLI_TABLE_H
#define ATRIUM_CLI_TABLE_H

#include <stddef.h>
#include <stdio.h>

typedef struct text_table text_table;

/* A table with the given column headers (copied). NULL when out of memory. */
text_table *table_new(size_t columns, const char *const *headers);
/* Appends a row of `columns` cells (copied; NULL prints as "-"). */
void table_add_row(text_table *table, const char *const *cells);
/* Prints headers and rows, each column as wide as its widest cell. */
void table_print(const text_table *table, FILE *out);
void table_free(text_table *table);

#endif
