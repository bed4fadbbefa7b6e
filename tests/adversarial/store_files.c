/*
 * store_files.c — the store against damaged and full database files (issue 12,
 * defect 14): a zero-byte atrium.db is refused instead of starting as an empty
 * mesh, a corrupt one is refused with SQLite's finding, and a full disk (here
 * max_database_bytes) refuses the write with a reason, counts it, and leaves
 * every acknowledged write readable. Route documents an older atriumd stored
 * in forms the API now refuses (an empty split, an empty header prefix) still
 * open.
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "model.h"
#include "store.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct fixture {
    char dir[64];
    char path[128];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/atrium-store-files-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/atrium.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char path[160];
        snprintf(path, sizeof(path), "%s%s", f->path, suffixes[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static off_t file_size(const char *path)
{
    struct stat info;
    return stat(path, &info) == 0 ? info.st_size : -1;
}

/* Puts service `name` with no options; returns the status. */
static store_status put_service(store *db, const char *name, store_error *error)
{
    model_service service;
    model_service_init(&service);
    service.name = strdup(name);
    assert_non_null(service.name);
    store_status status = store_put_service(db, &service, 0, NULL, NULL, error);
    model_service_clear(&service);
    return status;
}

/* Puts endpoint `id` of `service` with sixteen 63-byte label values (~1.3 KB a row). */
static store_status put_bulky_endpoint(store *db, const char *service, int id, store_error *error)
{
    model_endpoint endpoint;
    model_endpoint_init(&endpoint);
    char text[64];
    snprintf(text, sizeof(text), "endpoint-%d", id);
    endpoint.service = strdup(service);
    endpoint.id = strdup(text);
    endpoint.address = strdup("127.0.0.1");
    assert_true(endpoint.service && endpoint.id && endpoint.address);
    endpoint.port = (uint16_t)(10000 + id);
    char value[64];
    memset(value, 'v', 63);
    value[63] = '\0';
    for (int label = 0; label < 16; label++) {
        snprintf(text, sizeof(text), "key-%d", label);
        value[0] = (char)('a' + (id + label) % 26);
        assert_true(model_labels_set(&endpoint.labels, text, value));
    }
    store_status status = store_put_endpoint(db, &endpoint, 0, 0, NULL, NULL, error);
    model_endpoint_clear(&endpoint);
    return status;
}

static void test_zero_byte_file_refused(void **state)
{
    fixture *f = *state;
    FILE *empty = fopen(f->path, "w");
    assert_non_null(empty);
    fclose(empty);
    store *db = NULL;
    store_error error = {0};
    store_options options = {.path = f->path};
    assert_int_equal(store_open(&options, &db, &error), STORE_IO);
    assert_null(db);
    if (strstr(error.message, "empty (0 bytes)") == NULL || strstr(error.message, f->path) == NULL)
        fail_msg("refused without naming the file and why: %s", error.message);
    assert_int_equal(file_size(f->path), 0); /* untouched: the evidence stays */

    /* Where no file exists, a new store is made as before. */
    unlink(f->path);
    assert_int_equal(store_open(&options, &db, &error), STORE_OK);
    store_close(db);
    assert_true(file_size(f->path) > 0);
}

static void test_corrupt_file_refused_with_reason(void **state)
{
    fixture *f = *state;
    store *db = NULL;
    store_error error = {0};
    store_options options = {.path = f->path};
    assert_int_equal(store_open(&options, &db, &error), STORE_OK);
    char name[32];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "service-%03d", i);
        assert_int_equal(put_service(db, name, &error), STORE_OK);
    }
    bool ok = false;
    assert_int_equal(store_check_integrity(db, &ok, &error), STORE_OK);
    assert_true(ok);
    store_close(db); /* checkpoints: everything is in the main file now */
    off_t size = file_size(f->path);
    assert_true(size >= 4 * 4096);

    /* Overwrite the last pages (b-tree pages of the services) with garbage. */
    FILE *file = fopen(f->path, "r+b");
    assert_non_null(file);
    char garbage[4096];
    memset(garbage, 0xa5, sizeof(garbage));
    garbage[0] = 0x0d; /* a leaf page type, so the damage is inside a page, not its type */
    assert_int_equal(fseeko(file, size - 2 * 4096, SEEK_SET), 0);
    assert_int_equal(fwrite(garbage, 1, sizeof(garbage), file), sizeof(garbage));
    fclose(file);

    db = NULL;
    memset(&error, 0, sizeof(error));
    assert_int_equal(store_open(&options, &db, &error), STORE_IO);
    assert_null(db);
    if (strstr(error.message, "is corrupt: ") == NULL || strchr(error.message, '\n') != NULL)
        fail_msg("refused without SQLite's finding on one line: %s", error.message);
    print_message("refused: %s\n", error.message);
}

static void test_disk_full_refused_counted_and_nothing_lost(void **state)
{
    fixture *f = *state;
    store *db = NULL;
    store_error error = {0};
    store_options options = {.path = f->path, .max_database_bytes = 192 * 1024};
    assert_int_equal(store_open(&options, &db, &error), STORE_OK);
    assert_int_equal(put_service(db, "catalog", &error), STORE_OK);
    uint64_t full_before = store_disk_full_count();

    int acknowledged = 0;
    store_status status = STORE_OK;
    for (int id = 0; id < 2000 && status == STORE_OK; id++) { /* ~115 fit */
        status = put_bulky_endpoint(db, "catalog", id, &error);
        if (status == STORE_OK)
            acknowledged++;
    }
    if (status != STORE_IO || strstr(error.message, "full") == NULL)
        fail_msg("disk full reported as status %d: %s (field %s)", (int)status, error.message,
                 error.field);
    assert_true(acknowledged > 10);
    assert_true(store_disk_full_count() > full_before);

    /* Every acknowledged write is there, the refused one is not, the store still reads. */
    model_endpoint_list endpoints = {0};
    assert_int_equal(store_list_endpoints(db, "catalog", &endpoints, &error), STORE_OK);
    assert_int_equal(endpoints.count, (size_t)acknowledged);
    model_endpoint_list_free(&endpoints);
    int64_t revision = 0;
    assert_int_equal(store_revision(db, &revision, &error), STORE_OK);
    assert_int_equal(revision, 1 + acknowledged);
    store_close(db);

    /* Reopened without the cap, the same file takes writes again. */
    options.max_database_bytes = 0;
    assert_int_equal(store_open(&options, &db, &error), STORE_OK);
    assert_int_equal(put_bulky_endpoint(db, "catalog", 5000, &error), STORE_OK);
    store_close(db);
}

static void test_routes_stored_by_an_older_version_open(void **state)
{
    fixture *f = *state;
    store *db = NULL;
    store_error error = {0};
    store_options options = {.path = f->path};
    assert_int_equal(store_open(&options, &db, &error), STORE_OK);
    assert_int_equal(put_service(db, "catalog", &error), STORE_OK);
    model_routes routes = {0};
    json_t *good = json_loads("{\"rules\": [{\"match\": {\"path_prefix\": \"/\"}}]}", 0, NULL);
    model_error invalid;
    assert_true(model_routes_from_json(good, &routes, &invalid));
    json_decref(good);
    routes.service = strdup("catalog");
    assert_int_equal(store_put_routes(db, &routes, 0, NULL, NULL, &error), STORE_OK);
    model_routes_clear(&routes);
    store_close(db);

    /* What atriumd before issue 12 accepted and stored. */
    sqlite3 *handle = NULL;
    assert_int_equal(sqlite3_open(f->path, &handle), SQLITE_OK);
    const char *old = "{\"rules\": [{\"match\": {\"path_prefix\": \"/\", \"headers\": "
                      "[{\"name\": \"x-user\", \"prefix\": \"\"}]}, \"split\": []}]}";
    sqlite3_stmt *update = NULL;
    assert_int_equal(sqlite3_prepare_v2(handle,
                                        "UPDATE routes SET document = ? WHERE service = 'catalog'",
                                        -1, &update, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(update, 1, old, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(update), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(handle), 1);
    sqlite3_finalize(update);
    sqlite3_close(handle);

    assert_int_equal(store_open(&options, &db, &error), STORE_OK);
    if (store_get_routes(db, "catalog", &routes, &error) != STORE_OK)
        fail_msg("routes stored by an older atriumd do not open: %s (%s)", error.message,
                 error.field);
    json_t *read = model_routes_to_json(&routes);
    char *text = json_dumps(read, JSON_COMPACT | JSON_SORT_KEYS);
    print_message("read back as %s\n", text);
    assert_non_null(strstr(text, "\"present\":true"));
    assert_null(strstr(text, "\"split\""));
    assert_null(strstr(text, "\"prefix\":\"\""));
    free(text);
    json_decref(read);
    model_routes_clear(&routes);
    store_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_zero_byte_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_file_refused_with_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full_refused_counted_and_nothing_lost, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_routes_stored_by_an_older_version_open, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
