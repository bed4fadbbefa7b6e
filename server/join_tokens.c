/*
 * join_tokens.c — minting join tokens (OpenSSL randomness and SHA-256).
 */
#include "join_tokens.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void join_token_hash(const char *secret, uint8_t hash[MODEL_TOKEN_HASH_SIZE])
{
    unsigned int length = MODEL_TOKEN_HASH_SIZE;
    EVP_Digest(secret, strlen(secret), hash, &length, EVP_sha256(), NULL);
}

static void hex(const unsigned char *bytes, size_t count, char *out)
{
    for (size_t i = 0; i < count; i++)
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
}

store_status join_token_mint(store *db, const char *service, const char *namespace_name,
                             uint32_t ttl_s, uint32_t uses, int64_t now_ms, model_join_token *out,
                             char secret[JOIN_TOKEN_SECRET_LENGTH + 1], int64_t *revision,
                             store_error *error)
{
    memset(out, 0, sizeof(*out));
    unsigned char random_secret[JOIN_TOKEN_SECRET_LENGTH / 2], random_id[8];
    if (RAND_bytes(random_secret, sizeof(random_secret)) != 1 ||
        RAND_bytes(random_id, sizeof(random_id)) != 1) {
        if (error != NULL) {
            error->status = STORE_IO;
            snprintf(error->message, sizeof(error->message), "no randomness for a join token");
            error->field[0] = '\0';
        }
        return STORE_IO;
    }
    hex(random_secret, sizeof(random_secret), secret);
    OPENSSL_cleanse(random_secret, sizeof(random_secret));
    char id[2 * sizeof(random_id) + 1];
    hex(random_id, sizeof(random_id), id);
    out->id = strdup(id);
    out->service = strdup(service);
    out->namespace_name = strdup(namespace_name);
    join_token_hash(secret, out->hash);
    out->created_at_ms = now_ms;
    out->expires_at_ms = now_ms + (int64_t)ttl_s * 1000;
    out->uses_allowed = uses;
    store_status status = out->id && out->service && out->namespace_name
                              ? store_create_join_token(db, out, revision, error)
                              : STORE_IO;
    if (status != STORE_OK) {
        OPENSSL_cleanse(secret, JOIN_TOKEN_SECRET_LENGTH);
        model_join_token_clear(out);
    }
    return status;
}
