/*
 * address.h — "host:port" strings as used on command lines and in config
 * files ("127.0.0.1:15080", "[::1]:15010", "localhost:0").
 */
#ifndef ATRIUM_COMMON_ADDRESS_H
#define ATRIUM_COMMON_ADDRESS_H

#include <stddef.h>
#include <stdint.h>

/* Splits address into host (brackets removed) and port 0..65535.
 * Returns 0, or -1 with a reason in error when it is not host:port. */
int address_split(const char *address, char *host, size_t host_size, uint16_t *port, char *error,
                  size_t error_size);

#endif
