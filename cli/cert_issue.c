/*
 * cert_issue.c — key and CSR here, certificate from atriumd's CA over TLS.
 */
#include "cert_issue.h"

#include "ca_client.h"
#include "spiffe.h"
#include "workload.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writes text to dir/name with mode (replacing any old file). */
static int write_file(const char *dir, const char *name, const char *text, mode_t mode, char *error,
                      size_t error_size)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    size_t length = strlen(text);
    if (fd < 0 || fchmod(fd, mode) != 0 || write(fd, text, length) != (ssize_t)length ||
        fsync(fd) != 0) {
        snprintf(error, error_size, "cannot write %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* The roots of the admin API's bundle (the CRLs cut off): what atriumd's TLS
 * port must chain to. */
static char *fetch_roots(api_client *client, char *error, size_t error_size)
{
    api_response response;
    if (api_client_call(client, "GET", "/v1/ca/bundle", NULL, &response) != 0) {
        snprintf(error, error_size, "%s", response.error);
        return NULL;
    }
    char *roots = NULL;
    if (response.status == 200) {
        char *crl = strstr(response.text, "-----BEGIN X509 CRL-----");
        roots = crl ? strndup(response.text, (size_t)(crl - response.text)) : strdup(response.text);
    } else {
        char message[600];
        snprintf(error, error_size, "trust bundle: %s",
                 api_response_error(&response, message, sizeof(message)));
    }
    api_response_clear(&response);
    return roots;
}

/* Mints a one-use join token; returns its secret (the caller frees). */
static char *mint_token(api_client *client, const char *service, const char *space, char *error,
                        size_t error_size)
{
    json_t *body = json_pack("{s:s,s:s,s:i,s:i}", "service", service, "namespace", space, "uses", 1,
                             "ttl_s", 300);
    api_response response;
    int sent = api_client_call(client, "POST", "/v1/tokens", body, &response);
    json_decref(body);
    if (sent != 0) {
        snprintf(error, error_size, "%s", response.error);
        return NULL;
    }
    char *secret = NULL;
    if (response.status == 201) {
        const char *token = json_string_value(json_object_get(response.body, "token"));
        secret = token ? strdup(token) : NULL;
    } else {
        char message[600];
        snprintf(error, error_size, "join token: %s",
                 api_response_error(&response, message, sizeof(message)));
    }
    api_response_clear(&response);
    return secret;
}

int cert_issue(api_client *client, const cert_issue_request *request, FILE *out, char *error,
               size_t error_size)
{
    const char *space = request->namespace_name ? request->namespace_name : "default";
    const char *domain = request->trust_domain ? request->trust_domain : "atrium.local";
    char *identity = NULL, *roots = NULL, *token = NULL, *key = NULL, *csr = NULL;
    ca_client *channel = NULL;
    ca_client_result result;
    memset(&result, 0, sizeof(result));
    int outcome = -1;
    if (spiffe_format(domain, space, request->service, &identity, error, error_size) != 0)
        goto done;
    if (mkdir(request->out_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(error, error_size, "cannot create %s: %s", request->out_dir, strerror(errno));
        goto done;
    }
    if ((roots = fetch_roots(client, error, error_size)) == NULL)
        goto done;
    token = request->token ? strdup(request->token)
                           : mint_token(client, request->service, space, error, error_size);
    if (token == NULL || workload_generate_key(&key, error, error_size) != 0 ||
        workload_build_csr(key, identity, &csr, error, error_size) != 0)
        goto done;
    channel = ca_client_new(&(ca_client_options){request->ca_address, roots, NULL, NULL}, error,
                            error_size);
    if (channel == NULL ||
        ca_client_create_certificate(channel, csr, token, request->ttl_s, 10000, &result) != 0) {
        if (channel != NULL)
            snprintf(error, error_size, "cannot reach the certificate service at %s",
                     request->ca_address);
        goto done;
    }
    if (result.status != 0) {
        snprintf(error, error_size, "refused (gRPC status %d): %s", result.status, result.message);
        goto done;
    }
    if (write_file(request->out_dir, "key.pem", key, 0600, error, error_size) != 0 ||
        write_file(request->out_dir, "cert.pem", result.cert_chain_pem, 0644, error, error_size) !=
            0 ||
        write_file(request->out_dir, "bundle.pem", result.trust_bundle_pem, 0644, error,
                   error_size) != 0)
        goto done;
    int64_t not_before = 0, not_after = 0;
    workload_certificate_times(result.cert_chain_pem, &not_before, &not_after, error, error_size);
    fprintf(out,
            "certificate for %s written to %s/cert.pem (key %s/key.pem, mode 0600; trust "
            "bundle %s/bundle.pem)\nvalid until %lld ms; renew after %lld ms\n",
            identity, request->out_dir, request->out_dir, request->out_dir, (long long)not_after,
            (long long)workload_renew_at_ms(not_before, not_after));
    outcome = 0;
done:
    ca_client_result_clear(&result);
    ca_client_free(channel);
    free(identity);
    free(roots);
    if (token != NULL) {
        memset(token, 0, strlen(token));
        free(token);
    }
    if (key != NULL) {
        memset(key, 0, strlen(key));
        free(key);
    }
    free(csr);
    return outcome;
}
