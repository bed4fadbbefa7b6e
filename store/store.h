/*
 * store.h — Atrium's persistent state in SQLite; the only module with SQL.
 *
 * One writer connection (serialized by a mutex) and a small pool of reader
 * connections, all in WAL mode with foreign keys on. Statements are prepared
 * once per connection and reused. The schema is versioned with PRAGMA
 * user_version and upgraded at open; a database newer than this build is
 * refused.
 *
 * Every configuration mutation is one transaction that also appends its rows
 * to the change log and advances the store revision; the function returns the
 * new revision. Proxy status (what was sent, ACKed and NACKed) is operational
 * telemetry, written in batches by the xDS server (store_save_proxies), and
 * neither advances the revision nor writes the change log. Neither do issuing
 * a certificate and using a join token: they are records of the CA's work and
 * change no xDS resource (creating or revoking a token, and revoking a
 * certificate, are configuration and are logged).
 *
 * Errors: every function returns a store_status; when `error` is not NULL it
 * receives a message and, for STORE_INVALID, the offending field. Read
 * functions hand out structs the caller owns and frees with the model_*
 * functions named in model.h. The store is safe to use from several threads.
 */
#ifndef ATRIUM_STORE_STORE_H
#define ATRIUM_STORE_STORE_H

#include "model.h"

#include <stdbool.h>
#include <stdint.h>

/* The newest schema this build knows. */
#define STORE_SCHEMA_VERSION 3

typedef enum store_status {
    STORE_OK = 0,
    STORE_NOT_FOUND,           /* the entity, or its parent, does not exist */
    STORE_CONFLICT,            /* already exists / exhausted / not in the state asked for */
    STORE_INVALID,             /* a value breaks a rule; error->field says which */
    STORE_BUSY,                /* the database stayed locked past the busy timeout */
    STORE_IO,                  /* anything else SQLite or the file system reported */
    STORE_PRECONDITION_FAILED, /* the write's if_revision did not hold */
} store_status;

/* Conditional writes. Functions that take `if_revision` write only when the
 * condition holds, checked inside their transaction:
 *   0                 no condition;
 *   STORE_IF_EXISTS   the entity must exist (HTTP If-Match: *);
 *   a revision > 0    the entity must exist and have been last written at it
 *                     (HTTP If-Match: "<revision>").
 * Otherwise they return STORE_PRECONDITION_FAILED and change nothing. */
#define STORE_IF_EXISTS (-1)

typedef struct store_error {
    store_status status;
    char field[128];
    char message[256];
} store_error;

/* Static name of a status ("not_found", ...). */
const char *store_status_name(store_status status);

typedef struct store_options {
    const char *path;           /* database file; created when absent */
    bool synchronous_full;      /* PRAGMA synchronous=FULL instead of NORMAL */
    int busy_timeout_ms;        /* 0: 5000 */
    int target_schema_version;  /* 0: STORE_SCHEMA_VERSION. Tests and tools use
                                   lower values to create older databases. */
    int64_t max_database_bytes; /* 0: no cap. A write that would grow the database
                                   past it fails as if the disk were full. */
} store_options;

typedef struct store store;

/* Opens (creating and migrating as needed). *out is freed with store_close.
 * Refused (STORE_IO, with the reason): a database file of zero bytes (SQLite
 * would take it for a new, empty store and the mesh would silently be gone),
 * and a database that fails SQLite's quick_check (the first problem found). */
store_status store_open(const store_options *options, store **out, store_error *error);
/* How many writes SQLite refused because the disk (or max_database_bytes) was
 * full, in every store of this process since it started. */
uint64_t store_disk_full_count(void);
/* Closes every connection. NULL is accepted. */
void store_close(store *db);

/* The schema version of the open database. */
int store_schema_version(store *db);
/* The current revision (0 for an empty store). */
store_status store_revision(store *db, int64_t *revision, store_error *error);
/* Runs PRAGMA integrity_check. *ok is true when SQLite reports "ok"; otherwise
 * error->message holds its first complaint. */
store_status store_check_integrity(store *db, bool *ok, store_error *error);

/* Called after every commit that advanced the revision, on the committing
 * thread, outside the store's locks. It must be quick (wake someone up). */
typedef void (*store_commit_listener)(void *context);
/* Sets (or, with NULL, clears) the commit listener. */
void store_set_commit_listener(store *db, store_commit_listener listener, void *context);

/* ---- services ---- */

/* Creates or replaces a service (validated). *created tells which (may be NULL).
 * Replacing keeps its endpoints, routes and policy. On success service->revision
 * is set to the revision that wrote it, so *service is what the store holds. */
store_status store_put_service(store *db, model_service *service, int64_t if_revision,
                               bool *created, int64_t *revision, store_error *error);
/* *out is filled (caller clears it with model_service_clear). */
store_status store_get_service(store *db, const char *name, model_service *out, store_error *error);
/* All services ordered by name; caller frees with model_service_list_free. */
store_status store_list_services(store *db, model_service_list *out, store_error *error);
/* Deletes a service with its endpoints, routes and policy (each logged). */
store_status store_delete_service(store *db, const char *name, int64_t if_revision,
                                  int64_t *revision, store_error *error);

/* ---- endpoints ---- */

/* Creates or replaces endpoint (service, id). The service must exist
 * (STORE_NOT_FOUND otherwise). When ttl_s > 0 the endpoint expires at
 * now_ms + ttl_s unless it heartbeats. On success endpoint->revision and
 * endpoint->expires_at_ms are set, so *endpoint is what the store holds. */
store_status store_put_endpoint(store *db, model_endpoint *endpoint, int64_t if_revision,
                                int64_t now_ms, bool *created, int64_t *revision,
                                store_error *error);
store_status store_get_endpoint(store *db, const char *service, const char *id, model_endpoint *out,
                                store_error *error);
/* Endpoints of one service (service NULL: of every service), ordered by
 * service then id. */
store_status store_list_endpoints(store *db, const char *service, model_endpoint_list *out,
                                  store_error *error);
store_status store_delete_endpoint(store *db, const char *service, const char *id,
                                   int64_t if_revision, int64_t *revision, store_error *error);
/* Replaces the whole endpoint set of a service in one transaction. Every
 * endpoint's service field must be NULL or equal to service; ids unique. */
store_status store_replace_endpoints(store *db, const char *service,
                                     const model_endpoint *endpoints, size_t count, int64_t now_ms,
                                     int64_t *revision, store_error *error);
/* Extends the TTL (now_ms + ttl_s); an unhealthy endpoint that had expired
 * becomes healthy again. STORE_CONFLICT when the endpoint has no TTL. */
store_status store_heartbeat_endpoint(store *db, const char *service, const char *id,
                                      int64_t now_ms, int64_t *revision, store_error *error);
store_status store_set_endpoint_health(store *db, const char *service, const char *id,
                                       model_health health, int64_t if_revision, int64_t *revision,
                                       store_error *error);
/* Marks every healthy endpoint whose TTL passed before now_ms unhealthy, in one
 * transaction. *reaped receives the count; *revision is unchanged when 0. */
store_status store_reap_expired_endpoints(store *db, int64_t now_ms, size_t *reaped,
                                          int64_t *revision, store_error *error);

/* ---- routes and policies (one document per service) ---- */

/* Puts store_put_* write the service's whole document; *created (may be NULL)
 * says whether the service had none before. */
store_status store_put_routes(store *db, const model_routes *routes, int64_t if_revision,
                              bool *created, int64_t *revision, store_error *error);
store_status store_get_routes(store *db, const char *service, model_routes *out,
                              store_error *error);
store_status store_delete_routes(store *db, const char *service, int64_t if_revision,
                                 int64_t *revision, store_error *error);
store_status store_put_policy(store *db, const model_policy *policy, int64_t if_revision,
                              bool *created, int64_t *revision, store_error *error);
store_status store_get_policy(store *db, const char *service, model_policy *out,
                              store_error *error);
store_status store_delete_policy(store *db, const char *service, int64_t if_revision,
                                 int64_t *revision, store_error *error);

/* ---- join tokens ---- */

/* Records a token (its hash, never the secret). STORE_CONFLICT on a duplicate
 * id or hash. */
store_status store_create_join_token(store *db, const model_join_token *token, int64_t *revision,
                                     store_error *error);
store_status store_list_join_tokens(store *db, model_join_token_list *out, store_error *error);
store_status store_delete_join_token(store *db, const char *id, int64_t *revision,
                                     store_error *error);
/* Atomically finds the token with this hash, checks that it has not expired
 * and has uses left, and counts one use. STORE_NOT_FOUND when no such token,
 * STORE_CONFLICT when expired or used up. *out (may be NULL) gets the token as
 * it is after the use. */
store_status store_consume_join_token(store *db, const uint8_t hash[MODEL_TOKEN_HASH_SIZE],
                                      int64_t now_ms, model_join_token *out, store_error *error);

/* ---- issued certificates ---- */

store_status store_record_certificate(store *db, const model_certificate *certificate,
                                      int64_t *revision, store_error *error);
/* A first certificate, in one transaction: counts one use of the join token
 * with this hash, which must admit namespace_name/service, and records the
 * certificate; on any failure neither happens. STORE_NOT_FOUND for an unknown
 * token, STORE_CONFLICT (field "token") when it admits another service, has
 * expired or is used up, or (field "serial") for a serial already recorded. */
store_status store_record_certificate_with_join_token(store *db,
                                                      const uint8_t hash[MODEL_TOKEN_HASH_SIZE],
                                                      const char *namespace_name,
                                                      const char *service, int64_t now_ms,
                                                      const model_certificate *certificate,
                                                      int64_t *revision, store_error *error);
/* identity NULL: all. Ordered by not_before. */
store_status store_list_certificates(store *db, const char *identity, model_certificate_list *out,
                                     store_error *error);
/* STORE_NOT_FOUND for an unknown serial, STORE_CONFLICT when already revoked. */
store_status store_revoke_certificate(store *db, const char *serial, int64_t now_ms,
                                      int64_t *revision, store_error *error);
/* Revoked certificates that have not expired at now_ms (the CRL's content). */
store_status store_list_revoked_certificates(store *db, int64_t now_ms, model_certificate_list *out,
                                             store_error *error);

/* ---- proxies (status; does not advance the revision) ---- */

/* Marks a proxy connected (creating it), resetting nothing of its type status;
 * its protocol stays as it was ("" for a new proxy). */
store_status store_proxy_connected(store *db, const char *node_id, const char *identity,
                                   const char *service, const char *namespace_name, int64_t now_ms,
                                   store_error *error);
store_status store_proxy_disconnected(store *db, const char *node_id, int64_t now_ms,
                                      store_error *error);
/* An ACK of version for type_url clears the type's NACK. */
store_status store_proxy_acked(store *db, const char *node_id, const char *type_url,
                               const char *version, int64_t now_ms, store_error *error);
store_status store_proxy_nacked(store *db, const char *node_id, const char *type_url,
                                const char *version, const char *message, int64_t now_ms,
                                store_error *error);
/* Writes the in-memory status of many proxies in one transaction (the xDS
 * server's periodic flush). For each proxy, its row is created or replaced
 * with every field of the struct (NULL identity, service, namespace_name and
 * protocol are stored as ""); for each of its types, that type's row is
 * created or replaced with every field exactly as given: sent_version,
 * sent_at_ms, acked_version, acked_at_ms, nacked_version, nack_message and
 * nacked_at_ms (NULL strings stay NULL). Type rows not listed are left as they
 * are; when a node id or a (node id, type URL) pair repeats, the last one
 * wins. STORE_INVALID when a node_id or type_url is NULL or empty (error->field
 * names it, e.g. "proxies[2].types[0].type_url"); then nothing is written.
 * count 0 writes nothing. */
store_status store_save_proxies(store *db, const model_proxy *proxies, size_t count,
                                store_error *error);
/* Marks every connected proxy disconnected, last seen at now_ms, in one
 * transaction. xDS streams do not survive a restart: atriumd calls this at
 * start and at shutdown. */
store_status store_mark_all_proxies_disconnected(store *db, int64_t now_ms, store_error *error);
/* Proxies seen at or after seen_since_ms (0: all), ordered by node id, each
 * with its types ordered by type URL. */
store_status store_list_proxies(store *db, int64_t seen_since_ms, model_proxy_list *out,
                                store_error *error);
/* Deletes, in one transaction, the proxies disconnected and last seen before
 * disconnected_before_ms, then all but the keep_at_most most recently seen
 * (connected ones are kept before disconnected ones; ties by node id), each
 * with its type status. *removed (may be NULL) gets how many proxies went;
 * it is 0 unless STORE_OK. Does not advance the revision. */
store_status store_prune_proxies(store *db, int64_t disconnected_before_ms, size_t keep_at_most,
                                 size_t *removed, store_error *error);

/* ---- change log ---- */

/* Changes with revision > since, oldest first, at most limit (0: no limit).
 * STORE_NOT_FOUND when revisions after `since` were compacted away: the caller
 * must rebuild from a full read. */
store_status store_changes_since(store *db, int64_t since, size_t limit, model_change_list *out,
                                 store_error *error);
/* Drops change-log rows with revision <= up_to (keeps the current revision). */
store_status store_compact_changes(store *db, int64_t up_to, store_error *error);

#endif
