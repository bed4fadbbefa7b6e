/*
 * admin_token.c — creating, reading and checking the admin bearer token.
 * Randomness and the constant-time comparison come from OpenSSL.
 */
#include "admin_token.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static bool is_token(const char *text, size_t length)
{
    if (length != ADMIN_TOKEN_LENGTH)
        return false;
    for (size_t i = 0; i < length; i++) {
        if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
            return false;
    }
    return true;
}

static int read_token(const char *path, char token[ADMIN_TOKEN_LENGTH + 1], char *error,
                      size_t error_size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat info;
    if (fd < 0 || fstat(fd, &info) != 0) {
        snprintf(error, error_size, "cannot read %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (info.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(error, error_size,
                 "%s is accessible by group or others (mode %03o); "
                 "run: chmod 600 %s",
                 path, (unsigned)(info.st_mode & 0777), path);
        close(fd);
        return -1;
    }
    char buffer[ADMIN_TOKEN_LENGTH + 2];
    ssize_t length = read(fd, buffer, sizeof(buffer));
    close(fd);
    if (length > 0 && buffer[length - 1] == '\n')
        length--;
    if (length < 0 || !is_token(buffer, (size_t)length)) {
        snprintf(error, error_size, "%s does not hold an admin token (%d hex characters)", path,
                 ADMIN_TOKEN_LENGTH);
        return -1;
    }
    memcpy(token, buffer, ADMIN_TOKEN_LENGTH);
    token[ADMIN_TOKEN_LENGTH] = '\0';
    return 0;
}

int admin_token_load_or_create(const char *data_dir, char token[ADMIN_TOKEN_LENGTH + 1],
                               bool *created, char *error, size_t error_size)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", data_dir, ADMIN_TOKEN_FILE);
    *created = false;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST)
        return read_token(path, token, error, error_size);
    if (fd < 0) {
        snprintf(error, error_size, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char secret[ADMIN_TOKEN_LENGTH / 2];
    if (RAND_bytes(secret, sizeof(secret)) != 1) {
        snprintf(error, error_size, "no randomness for the admin token");
        close(fd);
        unlink(path);
        return -1;
    }
    for (size_t i = 0; i < sizeof(secret); i++)
        snprintf(token + 2 * i, 3, "%02x", secret[i]);
    OPENSSL_cleanse(secret, sizeof(secret));
    char line[ADMIN_TOKEN_LENGTH + 1];
    memcpy(line, token, ADMIN_TOKEN_LENGTH);
    line[ADMIN_TOKEN_LENGTH] = '\n';
    if (write(fd, line, sizeof(line)) != (ssize_t)sizeof(line) || fsync(fd) != 0) {
        snprintf(error, error_size, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    close(fd);
    *created = true;
    return 0;
}

bool admin_token_authorizes(const char *token, const char *authorization)
{
    static const char scheme[] = "Bearer ";
    if (authorization == NULL || strncasecmp(authorization, scheme, sizeof(scheme) - 1) != 0)
        return false;
    const char *presented = authorization + sizeof(scheme) - 1;
    /* The length is not secret (it is fixed); the contents are compared in
     * constant time. */
    if (strlen(presented) != ADMIN_TOKEN_LENGTH)
        return false;
    return CRYPTO_memcmp(presented, token, ADMIN_TOKEN_LENGTH) == 0;
}
