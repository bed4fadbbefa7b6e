/*
 * main.c — atriumctl, the command line for atriumd's admin REST API:
 * get/put/delete services, endpoints, routes and policies, heartbeats and
 * health, declarative apply, and proxy status.
 *
 * Server address: --addr, $ATRIUM_ADDR, or 127.0.0.1:15080.
 * Token: --token, $ATRIUM_TOKEN, or the file <--data-dir or ./atrium-data>/admin.token.
 * Output: human tables, or the server's JSON with -o json.
 */
#include "api_client.h"
#include "apply.h"
#include "cert_issue.h"
#include "table.h"
#include "yaml_json.h"

#include <curl/curl.h>
#include <stdarg.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct settings {
    const char *addr;
    const char *token;
    const char *data_dir;
    bool json_output;
} settings;

static const char usage[] =
    "Usage: atriumctl [--addr HOST:PORT] [--token TOKEN] [--data-dir DIR] [-o table|json] COMMAND\n"
    "\n"
    "Commands:\n"
    "  get services | service NAME | endpoints SERVICE | endpoint SERVICE ID\n"
    "      | routes SERVICE | policy SERVICE | proxies\n"
    "  put service NAME [-f FILE] [--namespace NS] [--protocol http|grpc|tcp]\n"
    "      [--lb-policy round_robin|least_request|random|ring_hash] [--connect-timeout-ms N]\n"
    "  put endpoint SERVICE ID [-f FILE] [--address IP] [--port N] [--weight N]\n"
    "      [--label KEY=VALUE]... [--zone ZONE] [--ttl SECONDS] [--proxy-port N]\n"
    "  put endpoints SERVICE -f FILE     replace the whole set ({endpoints: [...]})\n"
    "  put routes SERVICE -f FILE        ({rules: [...]})\n"
    "  put policy SERVICE -f FILE        ({default: allow|deny, allow: [...], deny: [...]})\n"
    "  delete service NAME | endpoint SERVICE ID | routes SERVICE | policy SERVICE\n"
    "  heartbeat SERVICE ID              renew an endpoint's TTL\n"
    "  health SERVICE ID healthy|unhealthy|draining\n"
    "  apply -f FILE [--dry-run]         make the mesh match a YAML/JSON file\n"
    "  proxy-status                      connected proxies and their ACK/NACK state\n"
    "  token create SERVICE [--namespace NS] [--ttl SECONDS] [--uses N]\n"
    "                                    a join token for SERVICE's identity (secret shown once)\n"
    "  token list | token revoke ID\n"
    "  cert list [--identity SPIFFE-ID] | cert revoke SERIAL\n"
    "  cert issue --service S [--namespace NS] [--token T] [--ttl SECONDS] [--ca-addr HOST:PORT]\n"
    "      [--trust-domain TD] --out DIR  key made here, CSR signed by the CA: DIR/key.pem, "
    "cert.pem\n"
    "  ca bundle                         the trust bundle (roots and CRL), PEM\n"
    "  ca rotate [--root]                replace the issuing certificate (or start a root "
    "rotation)\n"
    "  revision                          the store's current revision\n"
    "\n"
    "FILE is YAML or JSON; '-' reads standard input. Every command takes --help.\n"
    "Environment: ATRIUM_ADDR, ATRIUM_TOKEN.\n";

static int fail(const char *format, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    fprintf(stderr, "atriumctl: ");
    vfprintf(stderr, format, arguments);
    fprintf(stderr, "\n");
    va_end(arguments);
    return 1;
}

/* Reads the token file; returns a new string or NULL. */
static char *read_token_file(const char *data_dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/admin.token", data_dir);
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return NULL;
    char line[256];
    char *token = fgets(line, sizeof(line), file) ? strdup(line) : NULL;
    fclose(file);
    if (token != NULL)
        token[strcspn(token, "\r\n")] = '\0';
    return token;
}

static json_t *load_file(const char *path)
{
    FILE *file = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (file == NULL) {
        fail("cannot open %s", path);
        return NULL;
    }
    char error[512];
    json_t *document = yaml_json_load(file, error, sizeof(error));
    if (file != stdin)
        fclose(file);
    if (document == NULL)
        fprintf(stderr, "atriumctl: %s: %s\n", path, error);
    return document;
}

static const char *text_of(const json_t *object, const char *key, char *buffer, size_t size)
{
    json_t *value = json_object_get(object, key);
    if (value == NULL || json_is_null(value))
        return NULL;
    if (json_is_string(value))
        return json_string_value(value);
    char *dumped = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
    snprintf(buffer, size, "%s", dumped ? dumped : "?");
    free(dumped);
    return buffer;
}

/* Prints a list as a table: one row per item of array `key`, the named columns. */
static void print_table(const json_t *body, const char *key, const char *const *columns,
                        size_t count)
{
    text_table *out = table_new(count, columns);
    if (out == NULL)
        return;
    json_t *items = json_object_get(body, key);
    if (json_is_object(body) && items == NULL)
        items = json_pack("[O]", body); /* a single resource */
    else
        json_incref(items);
    size_t index;
    json_t *item;
    char buffers[8][512];
    json_array_foreach(items, index, item)
    {
        const char *cells[8];
        for (size_t c = 0; c < count && c < 8; c++) {
            char lower[64];
            size_t n = 0;
            for (; columns[c][n] && n + 1 < sizeof(lower); n++)
                lower[n] = columns[c][n] >= 'A' && columns[c][n] <= 'Z' ? columns[c][n] + 32
                                                                        : columns[c][n];
            lower[n] = '\0';
            cells[c] = text_of(item, lower, buffers[c], sizeof(buffers[c]));
        }
        table_add_row(out, cells);
    }
    json_decref(items);
    table_print(out, stdout);
    table_free(out);
}

static void print_proxies(const json_t *body)
{
    static const char *const columns[] = {"NODE", "SERVICE", "PROTOCOL", "CONNECTED",
                                          "TYPE", "SENT",    "ACKED",    "NACK"};
    text_table *out = table_new(8, columns);
    size_t index, type_index;
    json_t *proxy, *type;
    json_array_foreach(json_object_get(body, "proxies"), index, proxy)
    {
        const char *node = json_string_value(json_object_get(proxy, "node_id"));
        const char *service = json_string_value(json_object_get(proxy, "service"));
        const char *protocol = json_string_value(json_object_get(proxy, "protocol"));
        if (protocol != NULL && protocol[0] == '\0')
            protocol = NULL; /* not known: shown as "-" */
        const char *connected = json_is_true(json_object_get(proxy, "connected")) ? "yes" : "no";
        json_t *types = json_object_get(proxy, "types");
        if (json_array_size(types) == 0) {
            const char *cells[] = {node, service, protocol, connected, NULL, NULL, NULL, NULL};
            table_add_row(out, cells);
        }
        json_array_foreach(types, type_index, type)
        {
            const char *url = json_string_value(json_object_get(type, "type_url"));
            const char *short_type = url && strrchr(url, '.') ? strrchr(url, '.') + 1 : url;
            const char *nacked = json_string_value(json_object_get(type, "nacked_version"));
            const char *message = json_string_value(json_object_get(type, "nack_message"));
            char nack[512];
            if (nacked != NULL || message != NULL)
                snprintf(nack, sizeof(nack), "%s: %s", nacked ? nacked : "",
                         message ? message : "");
            const char *cells[] = {node,
                                   service,
                                   protocol,
                                   connected,
                                   short_type,
                                   json_string_value(json_object_get(type, "sent_version")),
                                   json_string_value(json_object_get(type, "acked_version")),
                                   nacked != NULL || message != NULL ? nack : NULL};
            table_add_row(out, cells);
        }
    }
    table_print(out, stdout);
    table_free(out);
}

/* Performs a call; prints the result (JSON, or via `print`) or the error. */
static int run(api_client *client, const settings *config, const char *method, const char *path,
               const json_t *body, void (*print)(const json_t *body, const char *summary),
               const char *summary)
{
    api_response response;
    if (api_client_call(client, method, path, body, &response) != 0)
        return fail("%s", response.error);
    int status = 0;
    if (response.status < 200 || response.status >= 300) {
        char message[700];
        status = fail("%s", api_response_error(&response, message, sizeof(message)));
    } else if (config->json_output || print == NULL) {
        char *text = json_dumps(response.body, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("%s\n", text ? text : response.text);
        free(text);
    } else {
        print(response.body, summary);
    }
    api_response_clear(&response);
    return status;
}

static void print_services(const json_t *body, const char *summary)
{
    (void)summary;
    static const char *const columns[] = {"NAME", "NAMESPACE", "PROTOCOL", "LB_POLICY", "REVISION"};
    print_table(body, "services", columns, 5);
}

static void print_endpoints(const json_t *body, const char *summary)
{
    (void)summary;
    static const char *const columns[] = {"ID",     "ADDRESS", "PORT",   "WEIGHT",
                                          "LABELS", "ZONE",    "HEALTH", "REVISION"};
    print_table(body, "endpoints", columns, 8);
}

static void print_document(const json_t *body, const char *summary)
{
    (void)summary;
    char *text = json_dumps(body, JSON_INDENT(2));
    printf("%s\n", text ? text : "{}");
    free(text);
}

static void print_summary(const json_t *body, const char *summary)
{
    json_t *revision = json_object_get(body, "revision");
    printf("%s (revision %lld)\n", summary, (long long)json_integer_value(revision));
}

static void print_proxy_status(const json_t *body, const char *summary)
{
    (void)summary;
    print_proxies(body);
}

/* Options of put service / put endpoint that map onto body fields. */
static int put_option(json_t *body, const char *option, const char *value)
{
    static const struct {
        const char *option, *field;
        bool numeric;
    } fields[] = {
        {"--namespace", "namespace", false},
        {"--protocol", "protocol", false},
        {"--lb-policy", "lb_policy", false},
        {"--connect-timeout-ms", "connect_timeout_ms", true},
        {"--address", "address", false},
        {"--port", "port", true},
        {"--weight", "weight", true},
        {"--zone", "zone", false},
        {"--ttl", "ttl_s", true},
        {"--proxy-port", "proxy_port", true},
    };
    if (strcmp(option, "--label") == 0) {
        const char *equals = strchr(value, '=');
        if (equals == NULL)
            return fail("--label needs KEY=VALUE, got '%s'", value);
        json_t *labels = json_object_get(body, "labels");
        if (labels == NULL)
            json_object_set_new(body, "labels", labels = json_object());
        char key[128];
        snprintf(key, sizeof(key), "%.*s", (int)(equals - value), value);
        json_object_set_new(labels, key, json_string(equals + 1));
        return 0;
    }
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (strcmp(option, fields[i].option) != 0)
            continue;
        if (fields[i].numeric) {
            char *end = NULL;
            long long number = strtoll(value, &end, 10);
            if (*end != '\0' || end == value)
                return fail("%s needs a number", option);
            json_object_set_new(body, fields[i].field, json_integer(number));
        } else {
            json_object_set_new(body, fields[i].field, json_string(value));
        }
        return 0;
    }
    return fail("unknown option %s (see --help)", option);
}

static void print_tokens(const json_t *body, const char *summary)
{
    (void)summary;
    if (json_object_get(body, "token") != NULL) {
        printf("token %s for %s (id %s, %lld use(s), expires at %lld ms)\n",
               json_string_value(json_object_get(body, "token")),
               json_string_value(json_object_get(body, "identity")),
               json_string_value(json_object_get(body, "id")),
               (long long)json_integer_value(json_object_get(body, "uses_allowed")),
               (long long)json_integer_value(json_object_get(body, "expires_at_ms")));
        printf("the secret is shown only now; the control plane keeps its hash\n");
        return;
    }
    static const char *const columns[] = {"ID", "IDENTITY", "USES", "USES_ALLOWED",
                                          "EXPIRES_AT_MS"};
    print_table(body, "tokens", columns, 5);
}

static void print_certificates(const json_t *body, const char *summary)
{
    (void)summary;
    static const char *const columns[] = {"SERIAL", "IDENTITY", "NOT_AFTER_MS", "REVOKED"};
    print_table(body, "certificates", columns, 4);
}

static int command_token(api_client *client, const settings *config, int argc, char **argv)
{
    char path[600], summary[300];
    if (argc >= 2 && strcmp(argv[0], "create") == 0) {
        json_t *body = json_pack("{s:s}", "service", argv[1]);
        for (int i = 2; i < argc; i++) {
            if (i + 1 >= argc) {
                json_decref(body);
                return fail("%s needs a value", argv[i]);
            }
            const char *value = argv[++i];
            char *end = NULL;
            long long number = strtoll(value, &end, 10);
            if (strcmp(argv[i - 1], "--namespace") == 0)
                json_object_set_new(body, "namespace", json_string(value));
            else if (strcmp(argv[i - 1], "--ttl") == 0 && *end == '\0')
                json_object_set_new(body, "ttl_s", json_integer(number));
            else if (strcmp(argv[i - 1], "--uses") == 0 && *end == '\0')
                json_object_set_new(body, "uses", json_integer(number));
            else {
                json_decref(body);
                return fail("bad option %s (see --help)", argv[i - 1]);
            }
        }
        int status = run(client, config, "POST", "/v1/tokens", body, print_tokens, NULL);
        json_decref(body);
        return status;
    }
    if (argc == 1 && strcmp(argv[0], "list") == 0)
        return run(client, config, "GET", "/v1/tokens", NULL, print_tokens, NULL);
    if (argc == 2 && strcmp(argv[0], "revoke") == 0) {
        snprintf(path, sizeof(path), "/v1/tokens/%s", argv[1]);
        snprintf(summary, sizeof(summary), "token/%s revoked", argv[1]);
        return run(client, config, "DELETE", path, NULL, print_summary, summary);
    }
    return fail("%s", "usage: atriumctl token create SERVICE [--namespace NS] [--ttl SECONDS] "
                      "[--uses N] | token list | token revoke ID");
}

static int command_cert(api_client *client, const settings *config, int argc, char **argv)
{
    char path[600], summary[300];
    if (argc >= 1 && strcmp(argv[0], "list") == 0) {
        if (argc == 3 && strcmp(argv[1], "--identity") == 0) {
            char *escaped = curl_escape(argv[2], 0);
            snprintf(path, sizeof(path), "/v1/certs?identity=%s", escaped ? escaped : "");
            curl_free(escaped);
        } else if (argc == 1) {
            snprintf(path, sizeof(path), "/v1/certs");
        } else {
            return fail("%s", "usage: atriumctl cert list [--identity SPIFFE-ID]");
        }
        return run(client, config, "GET", path, NULL, print_certificates, NULL);
    }
    if (argc >= 1 && strcmp(argv[0], "issue") == 0) {
        cert_issue_request request = {"127.0.0.1:15012", NULL, NULL, NULL, NULL, 0, NULL};
        for (int i = 1; i < argc; i++) {
            if (i + 1 >= argc)
                return fail("%s needs a value", argv[i]);
            const char *option = argv[i], *value = argv[++i];
            if (strcmp(option, "--service") == 0)
                request.service = value;
            else if (strcmp(option, "--namespace") == 0)
                request.namespace_name = value;
            else if (strcmp(option, "--token") == 0)
                request.token = value;
            else if (strcmp(option, "--ttl") == 0)
                request.ttl_s = (uint32_t)strtoul(value, NULL, 10);
            else if (strcmp(option, "--ca-addr") == 0)
                request.ca_address = value;
            else if (strcmp(option, "--trust-domain") == 0)
                request.trust_domain = value;
            else if (strcmp(option, "--out") == 0)
                request.out_dir = value;
            else
                return fail("unknown option %s (see --help)", option);
        }
        if (request.service == NULL || request.out_dir == NULL)
            return fail("%s", "usage: atriumctl cert issue --service S --out DIR [options]");
        char error[1024];
        if (cert_issue(client, &request, stdout, error, sizeof(error)) != 0)
            return fail("%s", error);
        return 0;
    }
    if (argc == 2 && strcmp(argv[0], "revoke") == 0) {
        snprintf(path, sizeof(path), "/v1/certs/%s/revoke", argv[1]);
        snprintf(summary, sizeof(summary), "cert/%s revoked", argv[1]);
        return run(client, config, "POST", path, NULL, print_summary, summary);
    }
    return fail("%s", "usage: atriumctl cert list [--identity SPIFFE-ID] | cert revoke SERIAL");
}

static bool wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    }
    return false;
}

static int command_get(api_client *client, const settings *config, int argc, char **argv)
{
    char path[600];
    if (argc >= 1 && strcmp(argv[0], "services") == 0 && argc == 1)
        return run(client, config, "GET", "/v1/services", NULL, print_services, NULL);
    if (argc == 2 && strcmp(argv[0], "service") == 0) {
        snprintf(path, sizeof(path), "/v1/services/%s", argv[1]);
        return run(client, config, "GET", path, NULL, print_services, NULL);
    }
    if (argc == 2 && strcmp(argv[0], "endpoints") == 0) {
        snprintf(path, sizeof(path), "/v1/services/%s/endpoints", argv[1]);
        return run(client, config, "GET", path, NULL, print_endpoints, NULL);
    }
    if (argc == 3 && strcmp(argv[0], "endpoint") == 0) {
        snprintf(path, sizeof(path), "/v1/services/%s/endpoints/%s", argv[1], argv[2]);
        return run(client, config, "GET", path, NULL, print_endpoints, NULL);
    }
    if (argc == 2 && (strcmp(argv[0], "routes") == 0 || strcmp(argv[0], "policy") == 0)) {
        snprintf(path, sizeof(path), "/v1/services/%s/%s", argv[1], argv[0]);
        return run(client, config, "GET", path, NULL, print_document, NULL);
    }
    if (argc == 1 && strcmp(argv[0], "proxies") == 0)
        return run(client, config, "GET", "/v1/proxies", NULL, print_proxy_status, NULL);
    return fail("%s", "usage: atriumctl get services | service NAME | endpoints SERVICE | "
                      "endpoint SERVICE ID | routes SERVICE | policy SERVICE | proxies");
}

static int command_put(api_client *client, const settings *config, int argc, char **argv)
{
    const char *kind = argc > 0 ? argv[0] : "";
    int positional = strcmp(kind, "endpoint") == 0 ? 3 : 2;
    if (argc < positional ||
        (strcmp(kind, "service") && strcmp(kind, "endpoint") && strcmp(kind, "endpoints") &&
         strcmp(kind, "routes") && strcmp(kind, "policy")))
        return fail("%s", "usage: atriumctl put service NAME | endpoint SERVICE ID | endpoints "
                          "SERVICE | routes SERVICE | policy SERVICE [-f FILE] [options]");
    json_t *body = NULL;
    for (int i = positional; i < argc; i++) {
        if (strcmp(argv[i], "-f") == 0 && i + 1 < argc) {
            json_decref(body);
            if ((body = load_file(argv[++i])) == NULL)
                return 1;
        }
    }
    if (body == NULL)
        body = json_object();
    for (int i = positional; i < argc; i++) {
        if (strcmp(argv[i], "-f") == 0) {
            i++;
            continue;
        }
        if (i + 1 >= argc || put_option(body, argv[i], argv[i + 1]) != 0) {
            json_decref(body);
            return i + 1 >= argc ? fail("%s needs a value", argv[i]) : 1;
        }
        i++;
    }
    char path[600], summary[300];
    if (strcmp(kind, "service") == 0)
        snprintf(path, sizeof(path), "/v1/services/%s", argv[1]);
    else if (strcmp(kind, "endpoint") == 0)
        snprintf(path, sizeof(path), "/v1/services/%s/endpoints/%s", argv[1], argv[2]);
    else
        snprintf(path, sizeof(path), "/v1/services/%s/%s", argv[1], kind);
    snprintf(summary, sizeof(summary), "%s/%s%s%s written", kind, argv[1],
             positional == 3 ? "/" : "", positional == 3 ? argv[2] : "");
    int status = run(client, config, "PUT", path, body, print_summary, summary);
    json_decref(body);
    return status;
}

static int command_delete(api_client *client, const settings *config, int argc, char **argv)
{
    char path[600], summary[300];
    if (argc == 2 && strcmp(argv[0], "service") == 0)
        snprintf(path, sizeof(path), "/v1/services/%s", argv[1]);
    else if (argc == 3 && strcmp(argv[0], "endpoint") == 0)
        snprintf(path, sizeof(path), "/v1/services/%s/endpoints/%s", argv[1], argv[2]);
    else if (argc == 2 && (strcmp(argv[0], "routes") == 0 || strcmp(argv[0], "policy") == 0))
        snprintf(path, sizeof(path), "/v1/services/%s/%s", argv[1], argv[0]);
    else
        return fail("%s", "usage: atriumctl delete service NAME | endpoint SERVICE ID | routes "
                          "SERVICE | policy SERVICE");
    snprintf(summary, sizeof(summary), "%s/%s%s%s deleted", argv[0], argv[1], argc == 3 ? "/" : "",
             argc == 3 ? argv[2] : "");
    return run(client, config, "DELETE", path, NULL, print_summary, summary);
}

int main(int argc, char **argv)
{
    settings config = {getenv("ATRIUM_ADDR"), getenv("ATRIUM_TOKEN"), "./atrium-data", false};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *option = argv[i];
        if (strcmp(option, "--help") == 0 || strcmp(option, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (i + 1 >= argc)
            return fail("%s needs a value", option);
        const char *value = argv[++i];
        if (strcmp(option, "--addr") == 0)
            config.addr = value;
        else if (strcmp(option, "--token") == 0)
            config.token = value;
        else if (strcmp(option, "--data-dir") == 0)
            config.data_dir = value;
        else if (strcmp(option, "-o") == 0 && strcmp(value, "json") == 0)
            config.json_output = true;
        else if (strcmp(option, "-o") == 0 && strcmp(value, "table") == 0)
            config.json_output = false;
        else
            return fail("unknown option '%s' (see --help)", option);
    }
    if (i >= argc) {
        fputs(usage, stderr);
        return 2;
    }
    const char *command = argv[i];
    int rest = argc - i - 1;
    char **args = argv + i + 1;
    if (wants_help(rest, args)) {
        fputs(usage, stdout);
        return 0;
    }
    char *token_from_file = config.token ? NULL : read_token_file(config.data_dir);
    char base_url[300];
    snprintf(base_url, sizeof(base_url), "http://%s",
             config.addr ? config.addr : "127.0.0.1:15080");
    api_client *client = api_client_new(base_url, config.token ? config.token : token_from_file);
    free(token_from_file);
    if (client == NULL)
        return fail("%s", "out of memory");

    int status;
    char path[600], summary[300];
    if (strcmp(command, "get") == 0) {
        status = command_get(client, &config, rest, args);
    } else if (strcmp(command, "put") == 0) {
        status = command_put(client, &config, rest, args);
    } else if (strcmp(command, "delete") == 0) {
        status = command_delete(client, &config, rest, args);
    } else if (strcmp(command, "heartbeat") == 0 && rest == 2) {
        snprintf(path, sizeof(path), "/v1/services/%s/endpoints/%s/heartbeat", args[0], args[1]);
        snprintf(summary, sizeof(summary), "endpoint/%s/%s heartbeat", args[0], args[1]);
        status = run(client, &config, "POST", path, NULL, print_summary, summary);
    } else if (strcmp(command, "health") == 0 && rest == 3) {
        snprintf(path, sizeof(path), "/v1/services/%s/endpoints/%s/health", args[0], args[1]);
        snprintf(summary, sizeof(summary), "endpoint/%s/%s is %s", args[0], args[1], args[2]);
        json_t *body = json_pack("{s:s}", "health", args[2]);
        status = run(client, &config, "PUT", path, body, print_summary, summary);
        json_decref(body);
    } else if (strcmp(command, "apply") == 0) {
        const char *file = NULL;
        bool dry_run = false;
        for (int a = 0; a < rest; a++) {
            if (strcmp(args[a], "-f") == 0 && a + 1 < rest)
                file = args[++a];
            else if (strcmp(args[a], "--dry-run") == 0)
                dry_run = true;
            else
                file = NULL, a = rest;
        }
        json_t *mesh = file ? load_file(file) : NULL;
        char error[1024];
        if (file == NULL)
            status = fail("%s", "usage: atriumctl apply -f FILE [--dry-run]");
        else if (mesh == NULL)
            status = 1;
        else if (apply_mesh(client, mesh, dry_run, stdout, error, sizeof(error)) != 0)
            status = fail("%s", error);
        else
            status = 0;
        json_decref(mesh);
    } else if (strcmp(command, "token") == 0) {
        status = command_token(client, &config, rest, args);
    } else if (strcmp(command, "cert") == 0) {
        status = command_cert(client, &config, rest, args);
    } else if (strcmp(command, "ca") == 0 && rest == 1 && strcmp(args[0], "bundle") == 0) {
        api_response response;
        if (api_client_call(client, "GET", "/v1/ca/bundle", NULL, &response) != 0) {
            status = fail("%s", response.error);
        } else {
            char message[700];
            if (response.status == 200)
                fputs(response.text, stdout);
            status = response.status == 200
                         ? 0
                         : fail("%s", api_response_error(&response, message, sizeof(message)));
            api_response_clear(&response);
        }
    } else if (strcmp(command, "ca") == 0 && rest >= 1 && strcmp(args[0], "rotate") == 0 &&
               (rest == 1 || (rest == 2 && strcmp(args[1], "--root") == 0))) {
        json_t *body = json_pack("{s:b}", "root", rest == 2);
        status = run(client, &config, "POST", "/v1/ca/rotate", body, print_document, NULL);
        json_decref(body);
    } else if (strcmp(command, "proxy-status") == 0 && rest == 0) {
        status = run(client, &config, "GET", "/v1/proxies", NULL, print_proxy_status, NULL);
    } else if (strcmp(command, "revision") == 0 && rest == 0) {
        status = run(client, &config, "GET", "/v1/revision", NULL, print_summary, "store");
    } else {
        fprintf(stderr, "atriumctl: unknown command or wrong arguments: %s\n\n%s", command, usage);
        status = 2;
    }
    api_client_free(client);
    return status;
}
