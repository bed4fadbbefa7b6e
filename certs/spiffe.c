/*
 * spiffe.c — formatting and parsing of SPIFFE IDs (see spiffe.h).
 */
#include "spiffe.h"

#include "model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_error(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static void set_error(char *error, size_t error_size, const char *format, ...)
{
    if (error == NULL || error_size == 0) {
        return;
    }
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
}

bool spiffe_trust_domain_is_valid(const char *trust_domain)
{
    if (trust_domain == NULL) {
        return false;
    }
    size_t length = strlen(trust_domain);
    if (length == 0 || length > SPIFFE_TRUST_DOMAIN_MAX) {
        return false;
    }
    for (size_t i = 0; i < length; i++) {
        char c = trust_domain[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-')) {
            return false;
        }
    }
    return true;
}

int spiffe_format(const char *trust_domain, const char *namespace_name, const char *service,
                  char **out, char *error, size_t error_size)
{
    *out = NULL;
    if (!spiffe_trust_domain_is_valid(trust_domain)) {
        set_error(error, error_size,
                  "invalid trust domain: expected 1..255 characters of [a-z0-9.-]");
        return -1;
    }
    if (!model_name_is_valid(namespace_name)) {
        set_error(error, error_size,
                  "invalid namespace: expected a DNS-1123 label (1..63 of [a-z0-9-])");
        return -1;
    }
    if (!model_name_is_valid(service)) {
        set_error(error, error_size,
                  "invalid service: expected a DNS-1123 label (1..63 of [a-z0-9-])");
        return -1;
    }
    size_t size = strlen(SPIFFE_SCHEME) + strlen(trust_domain) + strlen("/ns/") +
                  strlen(namespace_name) + strlen("/sa/") + strlen(service) + 1;
    char *id = malloc(size);
    if (id == NULL) {
        set_error(error, error_size, "out of memory");
        return -1;
    }
    snprintf(id, size, "%s%s/ns/%s/sa/%s", SPIFFE_SCHEME, trust_domain, namespace_name, service);
    *out = id;
    return 0;
}

void spiffe_id_clear(spiffe_id *id)
{
    free(id->trust_domain);
    free(id->namespace_name);
    free(id->service);
    id->trust_domain = NULL;
    id->namespace_name = NULL;
    id->service = NULL;
}

int spiffe_parse(const char *id, spiffe_id *out, char *error, size_t error_size)
{
    out->trust_domain = NULL;
    out->namespace_name = NULL;
    out->service = NULL;
    if (id == NULL) {
        set_error(error, error_size, "no SPIFFE ID");
        return -1;
    }
    size_t scheme_length = strlen(SPIFFE_SCHEME);
    if (strncmp(id, SPIFFE_SCHEME, scheme_length) != 0) {
        set_error(error, error_size, "not a SPIFFE ID (expected spiffe://<trust-domain>/...)");
        return -1;
    }
    const char *domain = id + scheme_length;
    const char *slash = strchr(domain, '/');
    if (slash == NULL) {
        set_error(error, error_size,
                  "SPIFFE ID has no path (expected /ns/<namespace>/sa/<service>)");
        return -1;
    }
    /* Split a copy of the rest: "<domain>/ns/<ns>/sa/<svc>". */
    char *copy = strdup(domain);
    if (copy == NULL) {
        set_error(error, error_size, "out of memory");
        return -1;
    }
    char *parts[6] = {0};
    size_t count = 0;
    char *cursor = copy;
    for (;;) {
        char *next = strchr(cursor, '/');
        if (count == 6) {
            count++; /* too many segments */
            break;
        }
        parts[count++] = cursor;
        if (next == NULL) {
            break;
        }
        *next = '\0';
        cursor = next + 1;
    }
    int result = -1;
    if (count != 5 || strcmp(parts[1], "ns") != 0 || strcmp(parts[3], "sa") != 0) {
        set_error(
            error, error_size,
            "SPIFFE ID must have the form spiffe://<trust-domain>/ns/<namespace>/sa/<service>");
    } else if (!spiffe_trust_domain_is_valid(parts[0])) {
        set_error(error, error_size,
                  "invalid trust domain in SPIFFE ID: expected 1..255 characters of [a-z0-9.-]");
    } else if (!model_name_is_valid(parts[2])) {
        set_error(error, error_size, "invalid namespace in SPIFFE ID: expected a DNS-1123 label");
    } else if (!model_name_is_valid(parts[4])) {
        set_error(error, error_size, "invalid service in SPIFFE ID: expected a DNS-1123 label");
    } else {
        out->trust_domain = strdup(parts[0]);
        out->namespace_name = strdup(parts[2]);
        out->service = strdup(parts[4]);
        if (out->trust_domain == NULL || out->namespace_name == NULL || out->service == NULL) {
            spiffe_id_clear(out);
            set_error(error, error_size, "out of memory");
        } else {
            result = 0;
        }
    }
    free(copy);
    return result;
}
