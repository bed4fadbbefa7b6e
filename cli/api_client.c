/*
 * api_client.c — libcurl easy handle reused for every call (keep-alive),
 * JSON bodies in and out.
 */
#include "api_client.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct api_client {
    CURL *curl;
    char *base_url;
    char *authorization; /* "Authorization: Bearer ..." or NULL */
};

typedef struct buffer {
    char *data;
    size_t length;
} buffer;

static size_t collect(char *data, size_t size, size_t count, void *context)
{
    buffer *into = context;
    size_t bytes = size * count;
    char *grown = realloc(into->data, into->length + bytes + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + into->length, data, bytes);
    into->length += bytes;
    grown[into->length] = '\0';
    into->data = grown;
    return bytes;
}

api_client *api_client_new(const char *base_url, const char *token)
{
    api_client *client = calloc(1, sizeof(*client));
    if (client == NULL)
        return NULL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    client->curl = curl_easy_init();
    client->base_url = strdup(base_url);
    if (token != NULL && asprintf(&client->authorization, "Authorization: Bearer %s", token) < 0)
        client->authorization = NULL;
    if (client->curl == NULL || client->base_url == NULL ||
        (token != NULL && client->authorization == NULL)) {
        api_client_free(client);
        return NULL;
    }
    return client;
}

void api_client_free(api_client *client)
{
    if (client == NULL)
        return;
    if (client->curl)
        curl_easy_cleanup(client->curl);
    free(client->base_url);
    free(client->authorization);
    free(client);
    curl_global_cleanup();
}

int api_client_call(api_client *client, const char *method, const char *path, const json_t *body,
                    api_response *response)
{
    memset(response, 0, sizeof(*response));
    char *url = NULL;
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (asprintf(&url, "%s%s", client->base_url, path) < 0 || (body && payload == NULL)) {
        free(payload);
        snprintf(response->error, sizeof(response->error), "out of memory");
        return -1;
    }
    struct curl_slist *headers = NULL;
    if (client->authorization)
        headers = curl_slist_append(headers, client->authorization);
    if (payload)
        headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    buffer received = {0};
    CURL *curl = client->curl;
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &received);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (payload) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
    }
    CURLcode code = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    free(payload);
    free(url);
    if (code != CURLE_OK) {
        snprintf(response->error, sizeof(response->error), "cannot reach atriumd at %s: %s",
                 client->base_url, curl_easy_strerror(code));
        free(received.data);
        return -1;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response->status);
    response->text = received.data ? received.data : strdup("");
    if (received.length > 0)
        response->body = json_loadb(received.data, received.length, 0, NULL);
    return 0;
}

void api_response_clear(api_response *response)
{
    json_decref(response->body);
    free(response->text);
    memset(response, 0, sizeof(*response));
}

const char *api_response_error(const api_response *response, char *text, size_t size)
{
    json_t *error = json_object_get(response->body, "error");
    const char *message = json_string_value(json_object_get(error, "message"));
    if (message == NULL)
        snprintf(text, size, "HTTP %ld: %s", response->status,
                 response->text && response->text[0] ? response->text : "(no body)");
    else
        snprintf(text, size, "%s (HTTP %ld)", message, response->status);
    return text;
}
