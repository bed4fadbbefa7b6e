/*
 * cert_issue.h — `atriumctl cert issue`: a certificate for a workload that
 * cannot run the CSR flow itself (e.g. an Envoy configured by files). The key
 * is generated here and never leaves this machine; the CSR goes to atriumd's
 * certificate service with a join token (minted through the admin API unless
 * one is given).
 */
#ifndef ATRIUM_CLI_CERT_ISSUE_H
#define ATRIUM_CLI_CERT_ISSUE_H

#include "api_client.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct cert_issue_request {
    const char *ca_address; /* atriumd's TLS port, e.g. 127.0.0.1:15012 */
    const char *service;
    const char *namespace_name; /* "default" when NULL */
    const char *trust_domain;   /* "atrium.local" when NULL */
    const char *token;          /* a join token's secret; NULL: mint one (1 use, 5 min) */
    uint32_t ttl_s;             /* 0: the CA's default */
    const char *out_dir;        /* key.pem (0600), cert.pem, bundle.pem are written here */
} cert_issue_request;

/* Does it all; prints what it wrote to out. Returns 0, or -1 with the reason. */
int cert_issue(api_client *client, const cert_issue_request *request, FILE *out, char *error,
               size_t error_size);

#endif
