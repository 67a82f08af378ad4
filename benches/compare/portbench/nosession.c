/* Preloaded into the load generator (wrk, h2load) of the TLS scenario: every
 * handshake starts without a session, so it is a full one whatever the server offers,
 * and each completed handshake is counted as full or resumed, so that the report can
 * show that none was resumed. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
extern int SSL_in_before(const SSL *s);
extern int SSL_set_session(SSL *s, SSL_SESSION *session);
extern int SSL_session_reused(const SSL *s);

static unsigned long full, resumed;
/* SSL_connect may call SSL_do_handshake through the PLT: only the outermost call acts. */
static __thread int depth;

static int wrap(SSL *s, const char *name) {
    int (*real)(SSL *) = (int (*)(SSL *))dlsym(RTLD_NEXT, name);
    if (!real)
        return -1;
    if (depth == 0 && SSL_in_before(s))
        SSL_set_session(s, NULL);
    depth++;
    int ret = real(s);
    depth--;
    if (depth == 0 && ret == 1) {
        if (SSL_session_reused(s))
            __atomic_add_fetch(&resumed, 1, __ATOMIC_RELAXED);
        else
            __atomic_add_fetch(&full, 1, __ATOMIC_RELAXED);
    }
    return ret;
}

int SSL_connect(SSL *s) { return wrap(s, "SSL_connect"); }
int SSL_do_handshake(SSL *s) { return wrap(s, "SSL_do_handshake"); }

__attribute__((destructor)) static void report(void) {
    const char *path = getenv("PBENCH_TLS_COUNT");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (!f)
        return;
    fprintf(f, "{\"full\": %lu, \"resumed\": %lu}\n", full, resumed);
    fclose(f);
}
