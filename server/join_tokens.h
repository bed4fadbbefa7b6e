/*
 * join_tokens.h — join tokens: one-time (or few-time) secrets that let a new
 * workload get its first certificate for one identity. The secret is 256
 * random bits, shown once; the store keeps only its SHA-256.
 */
#ifndef ATRIUM_SERVER_JOIN_TOKENS_H
#define ATRIUM_SERVER_JOIN_TOKENS_H

#include "store.h"

#include <stddef.h>
#include <stdint.h>

#define JOIN_TOKEN_SECRET_LENGTH 64 /* hex characters */
#define JOIN_TOKEN_TTL_MIN_S     60
#define JOIN_TOKEN_TTL_MAX_S     (30 * 86400)
#define JOIN_TOKEN_USES_MAX      1000

/* SHA-256 of a secret (as typed, hex). */
void join_token_hash(const char *secret, uint8_t hash[MODEL_TOKEN_HASH_SIZE]);

/* Mints a token for service/namespace and records it. On STORE_OK, secret
 * receives the secret (shown to the caller once) and *out the record (the
 * caller clears it with model_join_token_clear). */
store_status join_token_mint(store *db, const char *service, const char *namespace_name,
                             uint32_t ttl_s, uint32_t uses, int64_t now_ms, model_join_token *out,
                             char secret[JOIN_TOKEN_SECRET_LENGTH + 1], int64_t *revision,
                             store_error *error);

#endif
