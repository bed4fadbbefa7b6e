/*
 * address.c — parsing "host:port" and "[v6]:port".
 */
#include "address.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int address_split(const char *address, char *host, size_t host_size, uint16_t *port, char *error,
                  size_t error_size)
{
    const char *colon = address ? strrchr(address, ':') : NULL;
    if (colon == NULL || colon == address) {
        snprintf(error, error_size, "'%s' is not host:port", address ? address : "");
        return -1;
    }
    const char *host_start = address;
    size_t host_length = (size_t)(colon - address);
    if (address[0] == '[') {
        if (host_length < 3 || colon[-1] != ']') {
            snprintf(error, error_size, "'%s': an IPv6 host must be in brackets, [::1]:port",
                     address);
            return -1;
        }
        host_start++;
        host_length -= 2;
    } else if (memchr(address, ':', host_length) != NULL) {
        snprintf(error, error_size, "'%s': write an IPv6 host in brackets, [::1]:port", address);
        return -1;
    }
    char *end = NULL;
    long number = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || number < 0 || number > 65535) {
        snprintf(error, error_size, "'%s': port must be a number 0-65535", address);
        return -1;
    }
    if (host_length + 1 > host_size) {
        snprintf(error, error_size, "'%s': host name too long", address);
        return -1;
    }
    memcpy(host, host_start, host_length);
    host[host_length] = '\0';
    *port = (uint16_t)number;
    return 0;
}
