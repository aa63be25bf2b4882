/* A second translation unit, so the build compiles more than one source. */
#ifndef REPORT_H
#define REPORT_H

#include <isms/doee.h>

/* Writes "key=value\n" to the output; a NULL value reads as "(null)". */
void report(isms_ctx *ctx, const char *key, const char *value);

#endif
