/*
 * table.c — rows of copied strings, printed with padded columns.
 */
#include "table.h"

#include <stdlib.h>
#include <string.h>

struct text_table {
    size_t columns;
    size_t rows;  /* including the header row */
    char **cells; /* rows * columns */
};

text_table *table_new(size_t columns, const char *const *headers)
{
    text_table *created = calloc(1, sizeof(*created));
    if (created == NULL)
        return NULL;
    created->columns = columns;
    table_add_row(created, headers);
    return created;
}

void table_add_row(text_table *table, const char *const *cells)
{
    char **grown = realloc(table->cells, (table->rows + 1) * table->columns * sizeof(char *));
    if (grown == NULL)
        return;
    table->cells = grown;
    for (size_t c = 0; c < table->columns; c++)
        grown[table->rows * table->columns + c] = strdup(cells[c] ? cells[c] : "-");
    table->rows++;
}

void table_print(const text_table *table, FILE *out)
{
    size_t widths[32] = {0};
    for (size_t r = 0; r < table->rows; r++) {
        for (size_t c = 0; c < table->columns && c < 32; c++) {
            const char *cell = table->cells[r * table->columns + c];
            size_t width = cell ? strlen(cell) : 0;
            if (width > widths[c])
                widths[c] = width;
        }
    }
    for (size_t r = 0; r < table->rows; r++) {
        for (size_t c = 0; c < table->columns; c++) {
            const char *cell = table->cells[r * table->columns + c];
            if (c + 1 == table->columns)
                fprintf(out, "%s\n", cell ? cell : "");
            else
                fprintf(out, "%-*s   ", (int)widths[c < 32 ? c : 31], cell ? cell : "");
        }
    }
}

void table_free(text_table *table)
{
    if (table == NULL)
        return;
    for (size_t i = 0; i < table->rows * table->columns; i++)
        free(table->cells[i]);
    free(table->cells);
    free(table);
}
