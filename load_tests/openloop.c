/*
 * openloop: an open-loop HTTP/1.1 load generator (fixed arrival rate), one thread, epoll.
 *
 * Request k is due at start + k / rate whether or not earlier ones were answered. A due request
 * goes out on an idle keep-alive connection; when every connection is busy it waits in a queue,
 * and its latency still counts from when it was due (no coordinated omission, as in wrk2). Pacing
 * is epoll_pwait2's nanosecond timeout (Linux 5.11, glibc 2.35): no timer syscalls and no
 * spinning, so the generator's own CPU stays small next to the server it shares the machine with.
 *
 *   openloop HOST PORT PATH BODY_FILE CONTENT_TYPE EXTRA_HEADER RATE DURATION_S CONNECTIONS
 *
 * EXTRA_HEADER is one "Name: value" header line, or "" for none. A BODY_FILE named *.jsonl holds
 * one body per line, sent in turn; any other file is the one body. Prints one JSON object.
 * Built and run by load_tests/open_loop.py.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define READ_BUFFER (1 << 16)
#define DRAIN_NS 5000000000LL /* how long answers are awaited after the last arrival */

typedef struct {
    int fd;
    int busy;
    int64_t due_ns; /* when the request on it was due */
    size_t have;    /* bytes of the answer read so far */
    char buf[READ_BUFFER];
} conn_t;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static struct sockaddr_in address;
static char **requests;    /* whole requests, head and body, sent in turn */
static size_t *request_lens;
static size_t nrequests;
static int epfd;

static int open_conn(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void watch(conn_t *c) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) die("epoll_ctl");
}

static void reconnect(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = open_conn();
    c->busy = 0;
    c->have = 0;
    watch(c);
}

/* Request k out whole; 0 on success. Requests are small and the socket idle, so a write that
 * cannot finish at once means the connection is unusable. */
static int send_request(conn_t *c, size_t k) {
    const char *request = requests[k % nrequests];
    size_t request_len = request_lens[k % nrequests], sent = 0;
    while (sent < request_len) {
        ssize_t n = write(c->fd, request + sent, request_len - sent);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        sent += (size_t)n;
    }
    return 0;
}

/* Status of a complete answer in c->buf, 0 while incomplete, -1 if unparseable. */
static int complete_status(conn_t *c) {
    c->buf[c->have] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (end == NULL) return 0;
    long length = 0;
    for (char *line = strstr(c->buf, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "content-length:", 15) == 0) length = strtol(line + 17, NULL, 10);
    }
    if ((size_t)(end + 4 - c->buf) + (size_t)length > c->have) return 0;
    int status = 0;
    if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1) return -1;
    return status;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(const int64_t *sorted, size_t n, double p) {
    if (n == 0) return 0.0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1000.0;
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: openloop HOST PORT PATH BODY_FILE CONTENT_TYPE EXTRA_HEADER RATE DURATION_S CONNECTIONS\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3], *body_file = argv[4], *content_type = argv[5], *extra = argv[6];
    int port = atoi(argv[2]);
    double rate = atof(argv[7]), duration_s = atof(argv[8]);
    int nconns = atoi(argv[9]);
    if (rate <= 0 || duration_s <= 0 || nconns <= 0) {
        fprintf(stderr, "openloop: RATE, DURATION_S and CONNECTIONS must be positive\n");
        return 2;
    }

    FILE *f = fopen(body_file, "rb");
    if (!f) die("body file");
    struct stat st;
    fstat(fileno(f), &st);
    size_t file_len = (size_t)st.st_size;
    char *content = malloc(file_len + 1);
    if (fread(content, 1, file_len, f) != file_len) die("read body");
    fclose(f);
    content[file_len] = '\0';
    size_t name_len = strlen(body_file);
    int lines = name_len > 6 && strcmp(body_file + name_len - 6, ".jsonl") == 0;
    size_t capacity = 16;
    requests = malloc(sizeof(char *) * capacity);
    request_lens = malloc(sizeof(size_t) * capacity);
    for (char *body = content; body < content + file_len || (nrequests == 0 && !lines);) {
        char *end = lines ? strchr(body, '\n') : NULL;
        size_t body_len = end ? (size_t)(end - body) : (size_t)(content + file_len - body);
        if (body_len > 0 || !lines) {
            char head[1024];
            int head_len = snprintf(
                head, sizeof head, "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
                path, host, port, content_type, body_len, extra, extra[0] ? "\r\n" : "");
            if (nrequests == capacity) {
                capacity *= 2;
                requests = realloc(requests, sizeof(char *) * capacity);
                request_lens = realloc(request_lens, sizeof(size_t) * capacity);
            }
            requests[nrequests] = malloc((size_t)head_len + body_len);
            memcpy(requests[nrequests], head, (size_t)head_len);
            memcpy(requests[nrequests] + head_len, body, body_len);
            request_lens[nrequests++] = (size_t)head_len + body_len;
        }
        if (!lines) break;
        body = end ? end + 1 : content + file_len;
    }
    if (nrequests == 0) {
        fprintf(stderr, "openloop: %s holds no body\n", body_file);
        return 2;
    }

    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) die("host (an IPv4 address)");

    epfd = epoll_create1(0);
    conn_t *conns = calloc((size_t)nconns, sizeof(conn_t));
    int *idle = malloc(sizeof(int) * (size_t)nconns);
    int nidle = 0;
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = open_conn();
        watch(&conns[i]);
        idle[nidle++] = i;
    }

    size_t total = (size_t)(rate * duration_s + 0.5);
    double interval_ns = 1e9 / rate;
    int64_t *latency = malloc(sizeof(int64_t) * (total ? total : 1));
    int64_t *queue = malloc(sizeof(int64_t) * (total ? total : 1)); /* due times waiting for a connection */
    size_t qhead = 0, qtail = 0, max_queued = 0;
    size_t arrived = 0, completed = 0, ok = 0, failed = 0, reconnects = 0, waited = 0, sent = 0;

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t start = now_ns() + 1000000; /* 1 ms to settle */
    int64_t last_due = start + (int64_t)((double)(total ? total - 1 : 0) * interval_ns);
    struct epoll_event events[256];

    while (completed < total) {
        int64_t now = now_ns();
        while (arrived < total && start + (int64_t)((double)arrived * interval_ns) <= now) {
            queue[qtail++] = start + (int64_t)((double)arrived * interval_ns);
            arrived++;
        }
        if (qtail - qhead > max_queued) max_queued = qtail - qhead;
        while (qhead < qtail && nidle > 0) {
            conn_t *c = &conns[idle[--nidle]];
            c->due_ns = queue[qhead++];
            if (c->due_ns < now - 1000000) waited++; /* went out over 1 ms late: no connection was free */
            c->busy = 1;
            c->have = 0;
            if (send_request(c, sent++) != 0) {
                failed++;
                completed++;
                reconnects++;
                reconnect(c);
                idle[nidle++] = (int)(c - conns);
            }
        }
        if (arrived == total && now > last_due + DRAIN_NS) break; /* answers that never came */
        int64_t wake = arrived < total ? start + (int64_t)((double)arrived * interval_ns) : last_due + DRAIN_NS;
        int64_t wait = wake - now_ns();
        struct timespec timeout = {wait > 0 ? wait / 1000000000LL : 0, wait > 0 ? wait % 1000000000LL : 0};
        int n = epoll_pwait2(epfd, events, 256, &timeout, NULL);
        if (n < 0 && errno == EINTR) continue;
        int64_t answered_at = now_ns();
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            ssize_t got = read(c->fd, c->buf + c->have, READ_BUFFER - 1 - c->have);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            int status = got > 0 ? (c->have += (size_t)got, complete_status(c)) : -1;
            if (status == 0 && c->have < READ_BUFFER - 1) continue;
            int was_busy = c->busy;
            if (was_busy) {
                completed++;
                if (status >= 200 && status < 300) {
                    latency[ok++] = answered_at - c->due_ns;
                } else {
                    failed++;
                }
            }
            if (status <= 0) { /* closed, unparseable or too large: a fresh connection */
                reconnects++;
                reconnect(c);
            }
            c->busy = 0;
            c->have = 0;
            if (was_busy) idle[nidle++] = (int)(c - conns); /* an idle one that closed is still listed */
        }
    }
    getrusage(RUSAGE_SELF, &ru1);
    double elapsed_s = (double)(now_ns() - start) / 1e9;
    double cpu_s = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                   (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    qsort(latency, ok, sizeof(int64_t), cmp_i64);
    double sum = 0;
    for (size_t i = 0; i < ok; i++) sum += (double)latency[i];
    printf("{\"offered\": %zu, \"ok\": %zu, \"failed\": %zu, \"unanswered\": %zu, \"elapsed_s\": %.4f, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, "
           "\"mean_us\": %.1f, \"waited_for_connection\": %zu, \"max_queued\": %zu, \"reconnects\": %zu, "
           "\"generator_cpu_s\": %.4f}\n",
           total, ok, failed, total - completed, elapsed_s, pct(latency, ok, 50), pct(latency, ok, 90),
           pct(latency, ok, 99), pct(latency, ok, 99.9), ok ? (double)latency[ok - 1] / 1000.0 : 0.0,
           ok ? sum / (double)ok / 1000.0 : 0.0, waited, max_queued, reconnects, cpu_s);
    return 0;
}
