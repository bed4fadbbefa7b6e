/*
 * spiffe.h — SPIFFE IDs of Atrium workloads: spiffe://<trust-domain>/ns/<namespace>/sa/<service>.
 *
 * Formatting builds a new string from validated parts; parsing checks the
 * whole shape and splits it back. Namespace and service are DNS-1123 labels
 * (model_name_is_valid); the trust domain is 1..255 of [a-z0-9.-].
 * Errors are returned (0 / -1 with a message in error[error_size]), never printed.
 */
#ifndef ATRIUM_CERTS_SPIFFE_H
#define ATRIUM_CERTS_SPIFFE_H

#include <stdbool.h>
#include <stddef.h>

#define SPIFFE_SCHEME           "spiffe://"
#define SPIFFE_TRUST_DOMAIN_MAX 255

/* The parts of a SPIFFE ID; every string is owned by the struct. */
typedef struct spiffe_id {
    char *trust_domain;
    char *namespace_name;
    char *service;
} spiffe_id;

/* True for a valid trust domain: 1..255 characters of [a-z0-9.-]. */
bool spiffe_trust_domain_is_valid(const char *trust_domain);

/* Formats spiffe://<trust_domain>/ns/<namespace_name>/sa/<service> into a new
 * string in *out (the caller frees it with free()). Returns -1 with a message
 * when a part is invalid or memory runs out (*out is then NULL). */
int spiffe_format(const char *trust_domain, const char *namespace_name, const char *service,
                  char **out, char *error, size_t error_size);

/* Parses and validates id into *out (its strings are new; release them with
 * spiffe_id_clear). On failure returns -1, *out is left empty (all NULL) and
 * error says what is wrong. */
int spiffe_parse(const char *id, spiffe_id *out, char *error, size_t error_size);

/* Frees the strings of id and sets them to NULL; the struct itself is the caller's. */
void spiffe_id_clear(spiffe_id *id);

#endif
