/*
 * apply.c — declarative apply: canonicalize with a server dry run, compare
 * with the current state, write only what differs.
 */
#include "apply.h"

#include <stdio.h>
#include <string.h>

/* Keys the server adds to what it stores: not part of the desired state. */
static void drop_state(json_t *object, const json_t *desired)
{
    json_object_del(object, "revision");
    json_object_del(object, "expires_at_ms");
    if (json_object_get(desired, "health") == NULL)
        json_object_del(object, "health");
}

/* Runs a call and demands one of the expected statuses; fills error otherwise. */
static int call(api_client *client, const char *method, const char *path, const json_t *body,
                api_response *response, long allowed_status, char *error, size_t error_size)
{
    if (api_client_call(client, method, path, body, response) != 0) {
        snprintf(error, error_size, "%s", response->error);
        return -1;
    }
    if (response->status >= 200 && response->status < 300)
        return 0;
    if (response->status == allowed_status)
        return 0;
    char message[600];
    snprintf(error, error_size, "%s %s: %s", method, path,
             api_response_error(response, message, sizeof(message)));
    api_response_clear(response);
    return -1;
}

/* Brings one part (service, routes or policy document) in line.
 * path is the resource's path; the verdict is printed as "<kind>/<name> ...". */
static int apply_document(api_client *client, const char *kind, const char *name, const char *path,
                          const json_t *desired, bool dry_run, FILE *out, char *error,
                          size_t error_size)
{
    char dry_path[600];
    snprintf(dry_path, sizeof(dry_path), "%s?dry_run=true", path);
    api_response canonical, current;
    if (call(client, "PUT", dry_path, desired, &canonical, 0, error, error_size) != 0)
        return -1;
    if (call(client, "GET", path, NULL, &current, 404, error, error_size) != 0) {
        api_response_clear(&canonical);
        return -1;
    }
    const char *verdict = "unchanged";
    if (current.status == 404) {
        verdict = "created";
    } else {
        drop_state(current.body, canonical.body);
        drop_state(canonical.body, canonical.body);
        if (!json_equal(current.body, canonical.body))
            verdict = "configured";
    }
    int result = 0;
    if (strcmp(verdict, "unchanged") != 0 && !dry_run) {
        api_response written;
        result = call(client, "PUT", path, desired, &written, 0, error, error_size);
        if (result == 0)
            api_response_clear(&written);
    }
    if (result == 0)
        fprintf(out, "%s/%s %s%s\n", kind, name, verdict, dry_run ? " (dry run)" : "");
    api_response_clear(&canonical);
    api_response_clear(&current);
    return result;
}

/* Finds the endpoint with this id in a list. */
static json_t *endpoint_by_id(const json_t *list, const char *id)
{
    size_t index;
    json_t *item;
    json_array_foreach(list, index, item)
    {
        const char *other = json_string_value(json_object_get(item, "id"));
        if (other != NULL && strcmp(other, id) == 0)
            return item;
    }
    return NULL;
}

static int apply_endpoints(api_client *client, const char *service, const json_t *endpoints,
                           bool dry_run, FILE *out, char *error, size_t error_size)
{
    char path[512], dry_path[600];
    snprintf(path, sizeof(path), "/v1/services/%s/endpoints", service);
    snprintf(dry_path, sizeof(dry_path), "%s?dry_run=true", path);
    json_t *desired = json_pack("{s:O}", "endpoints", endpoints);
    api_response canonical, current;
    if (call(client, "PUT", dry_path, desired, &canonical, 0, error, error_size) != 0) {
        json_decref(desired);
        return -1;
    }
    if (call(client, "GET", path, NULL, &current, 404, error, error_size) != 0) {
        api_response_clear(&canonical);
        json_decref(desired);
        return -1;
    }
    json_t *wanted = json_object_get(canonical.body, "endpoints");
    json_t *present = json_object_get(current.body, "endpoints");
    bool same = current.status != 404 && json_array_size(wanted) == json_array_size(present);
    size_t index;
    json_t *item;
    json_array_foreach(wanted, index, item)
    {
        if (!same)
            break;
        json_t *existing = endpoint_by_id(present, json_string_value(json_object_get(item, "id")));
        if (existing == NULL) {
            same = false;
            break;
        }
        drop_state(existing, item);
        same = json_equal(existing, item);
    }
    int result = 0;
    if (!same && !dry_run) {
        api_response written;
        result = call(client, "PUT", path, desired, &written, 0, error, error_size);
        if (result == 0)
            api_response_clear(&written);
    }
    if (result == 0)
        fprintf(out, "endpoints/%s %s (%zu)%s\n", service, same ? "unchanged" : "configured",
                json_array_size(wanted), dry_run ? " (dry run)" : "");
    api_response_clear(&canonical);
    api_response_clear(&current);
    json_decref(desired);
    return result;
}

int apply_mesh(api_client *client, const json_t *mesh, bool dry_run, FILE *out, char *error,
               size_t error_size)
{
    json_t *services = json_object_get(mesh, "services");
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)mesh, key, value)
    {
        (void)value;
        if (strcmp(key, "services") != 0) {
            snprintf(error, error_size, "unknown top-level key '%s' (expected: services)", key);
            return -1;
        }
    }
    if (!json_is_array(services)) {
        snprintf(error, error_size, "the document needs 'services:', a list of services");
        return -1;
    }
    size_t index;
    json_t *entry;
    json_array_foreach(services, index, entry)
    {
        const char *name = json_string_value(json_object_get(entry, "name"));
        if (!json_is_object(entry) || name == NULL) {
            snprintf(error, error_size, "services[%zu] needs a 'name'", index);
            return -1;
        }
        json_t *service = json_deep_copy(entry);
        json_object_del(service, "endpoints");
        json_object_del(service, "routes");
        json_object_del(service, "policy");
        char path[512];
        snprintf(path, sizeof(path), "/v1/services/%s", name);
        int result =
            apply_document(client, "service", name, path, service, dry_run, out, error, error_size);
        json_decref(service);
        if (result != 0)
            return -1;
        json_t *endpoints = json_object_get(entry, "endpoints");
        if (endpoints != NULL &&
            apply_endpoints(client, name, endpoints, dry_run, out, error, error_size) != 0)
            return -1;
        const char *parts[] = {"routes", "policy"};
        for (size_t p = 0; p < 2; p++) {
            json_t *document = json_object_get(entry, parts[p]);
            if (document == NULL)
                continue;
            snprintf(path, sizeof(path), "/v1/services/%s/%s", name, parts[p]);
            if (apply_document(client, parts[p], name, path, document, dry_run, out, error,
                               error_size) != 0)
                return -1;
        }
    }
    return 0;
}
