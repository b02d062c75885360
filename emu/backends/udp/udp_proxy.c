/*
 * udp_proxy.c: the default data path of emu's flannel udp daemon, in C (flannel's own proxy was C).
 *
 * emu.backends.udp.daemon checks its command line, then execs this program (same pid) when it is built
 * (`python3 -m emu.backends.udp.helper build`, which install.sh runs); without it the daemon runs the same loop
 * in Python (emu.backends.udp.proxy), a little slower per packet and slower to wake up. Both do what flannel's
 * backend/udp/proxy.c does, and this file says it in the same words as proxy.py:
 *   - one thread; poll() on the TUN device and the UDP socket; once either is readable, alternate one TUN read
 *     and one socket recv until both are empty (no poll while there is traffic);
 *   - tun -> udp: one read of one IP packet; the node owning the destination's subnet (none: ICMP net
 *     unreachable back into the TUN); TTL - 1 (drop at 0); one sendto() of the bare packet;
 *   - udp -> tun: one recv (MSG_DONTWAIT) of one datagram; TTL - 1; one write() into the TUN.
 * It creates the TUN (IFF_TUN | IFF_NO_PI), binds the socket, prints READY (and writes --ready-file with its pid);
 * on SIGTERM/SIGINT it prints its counters with -v and exits 0; a setup failure is one line and exit 1. Messages
 * and counters read as the Python loop's (the daemon's tests run against both).
 *
 *   udp_proxy --tun NAME --listen IP:PORT [--route NET/LEN=IP:PORT]... [--sock-buf BYTES] [--txqueuelen N]
 *             [--tun-ip IP] [--ping-unreachable] [--ready-file PATH] [-v]
 * (the daemon passes only arguments it has already checked).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROG "flannel_udp"
#define BUF_SIZE 65536
#define MAX_ROUTES 4096

struct route {
    uint32_t net, mask; /* network byte order */
    struct sockaddr_in node;
};

struct counters {
    unsigned long long sent, received, unreachable, dropped, tun_reads, udp_reads, tun_writes, udp_sends, waits;
};

static struct route routes[MAX_ROUTES];
static size_t nroutes;
static struct counters count;
static const char *tun_name = "flannel0";
static uint32_t tun_ip; /* network byte order, 0 = read from the device when first needed */
static int verbose, about_echo;
static volatile sig_atomic_t stop_signal;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    fputs(PROG ": error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;
    if (!verbose)
        return;
    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void on_signal(int sig)
{
    stop_signal = sig;
}

static uint16_t checksum(const uint8_t *p, size_t len)
{
    uint32_t sum = 0;
    size_t i;
    for (i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (len & 1)
        sum += (uint32_t)p[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

/* TTL - 1 and the header checksum patched (RFC 1624 eqn. 3); 0: the TTL ran out, drop the packet */
static int ttl_minus_one(uint8_t *ip)
{
    uint32_t acc;
    if (ip[8] <= 1)
        return 0;
    ip[8]--;
    acc = 0x1FEFE - (uint32_t)(ip[10] << 8 | ip[11]);
    acc = 0xFFFF - ((acc & 0xFFFF) + (acc >> 16));
    ip[10] = acc >> 8;
    ip[11] = acc & 0xFF;
    return 1;
}

static struct sockaddr_in *node_for(uint32_t dst)
{
    size_t i;
    for (i = 0; i < nroutes; i++)
        if ((dst & routes[i].mask) == routes[i].net)
            return &routes[i].node;
    return NULL;
}

/* proxy.c's send_net_unreachable: ICMP type 3 code 0 from the TUN's address, TTL 8, quoting the offender's
 * header and 8 bytes; never about ICMP (except echo requests with --ping-unreachable), non-first fragments or
 * headers of 60 bytes */
static void net_unreachable(int tun, int sock, const uint8_t *bad, size_t len)
{
    uint8_t reply[20 + 8 + 60 + 8];
    size_t ihl, quote, total;
    uint16_t sum;
    if (len < 20)
        return;
    ihl = (size_t)(bad[0] & 0x0F) * 4;
    if (ihl < 20 || ihl >= 60)
        return;
    if (bad[9] == 1 && !(about_echo && len > ihl && bad[ihl] == 8))
        return;
    if ((bad[6] << 8 | bad[7]) & 0x1FFF)
        return;
    if (!tun_ip) {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof(ifr));
        strncpy(ifr.ifr_name, tun_name, IFNAMSIZ - 1);
        ifr.ifr_addr.sa_family = AF_INET;
        if (ioctl(sock, SIOCGIFADDR, &ifr) == 0)
            tun_ip = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr;
    }
    if (!tun_ip) {
        note("no route and no TUN address yet: cannot send ICMP net unreachable");
        return;
    }
    quote = ihl + 8;
    total = 20 + 8 + quote;
    memset(reply, 0, sizeof(reply));
    memcpy(reply + 28, bad, quote <= len ? quote : len);
    reply[20] = 3;
    sum = checksum(reply + 20, 8 + quote);
    reply[22] = sum >> 8;
    reply[23] = sum & 0xFF;
    reply[0] = 0x45;
    reply[2] = total >> 8;
    reply[3] = total & 0xFF;
    reply[8] = 8;
    reply[9] = 1;
    memcpy(reply + 12, &tun_ip, 4);
    memcpy(reply + 16, bad + 12, 4);
    sum = checksum(reply, 20);
    reply[10] = sum >> 8;
    reply[11] = sum & 0xFF;
    count.unreachable++;
    if (write(tun, reply, total) < 0)
        note("failed to send ICMP net unreachable: %s", strerror(errno));
}

/* one packet TUN -> UDP; 0 when the TUN was empty */
static int tun_to_udp(int tun, int sock, uint8_t *buf)
{
    struct sockaddr_in *node;
    uint32_t dst;
    ssize_t n = read(tun, buf, BUF_SIZE);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            note("TUN read failed: %s", strerror(errno));
        return 0;
    }
    count.tun_reads++;
    if (n < 20 || buf[0] >> 4 != 4) {
        count.dropped++;
        return 1;
    }
    memcpy(&dst, buf + 16, 4);
    node = node_for(dst);
    if (!node) {
        net_unreachable(tun, sock, buf, (size_t)n);
        return 1;
    }
    if (!ttl_minus_one(buf)) {
        count.dropped++;
        return 1;
    }
    if (sendto(sock, buf, (size_t)n, 0, (struct sockaddr *)node, sizeof(*node)) < 0) {
        note("UDP send to %s:%d failed: %s", inet_ntoa(node->sin_addr), ntohs(node->sin_port), strerror(errno));
        return 1;
    }
    count.sent++;
    count.udp_sends++;
    return 1;
}

/* one datagram UDP -> TUN; 0 when the socket was empty */
static int udp_to_tun(int sock, int tun, uint8_t *buf)
{
    ssize_t n = recv(sock, buf, BUF_SIZE, MSG_DONTWAIT);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            note("UDP recv failed: %s", strerror(errno));
        return 0;
    }
    count.udp_reads++;
    if (n < 20 || !ttl_minus_one(buf)) {
        count.dropped++;
        return 1;
    }
    while (write(tun, buf, (size_t)n) < 0) {
        if (errno != EAGAIN) {
            note("TUN write failed: %s", strerror(errno));
            return 1;
        }
    }
    count.received++;
    count.tun_writes++;
    return 1;
}

static void parse_endpoint(const char *text, struct sockaddr_in *out)
{
    char host[INET_ADDRSTRLEN];
    const char *colon = strrchr(text, ':');
    size_t len = colon ? (size_t)(colon - text) : 0;
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    if (!colon || len >= sizeof(host))
        die("bad address %s (IP:PORT)", text);
    memcpy(host, text, len);
    host[len] = 0;
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1 || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535)
        die("bad address %s (IP:PORT)", text);
    out->sin_port = htons((uint16_t)atoi(colon + 1));
}

static void parse_route(const char *text)
{
    char net[INET_ADDRSTRLEN + 3], *slash;
    const char *eq = strchr(text, '=');
    struct in_addr addr;
    int len;
    if (!eq || (size_t)(eq - text) >= sizeof(net) || nroutes == MAX_ROUTES)
        die("bad route %s (NET/LEN=IP:PORT)", text);
    memcpy(net, text, (size_t)(eq - text));
    net[eq - text] = 0;
    slash = strchr(net, '/');
    if (!slash)
        die("bad route %s (NET/LEN=IP:PORT)", text);
    *slash = 0;
    len = atoi(slash + 1);
    if (len < 0 || len > 32 || inet_pton(AF_INET, net, &addr) != 1)
        die("bad route %s (NET/LEN=IP:PORT)", text);
    routes[nroutes].mask = len ? htonl(~(uint32_t)0 << (32 - len)) : 0;
    routes[nroutes].net = addr.s_addr & routes[nroutes].mask;
    parse_endpoint(eq + 1, &routes[nroutes].node);
    nroutes++;
}

static int open_tun(int txqueuelen)
{
    struct ifreq ifr;
    int tun = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (tun < 0)
        die("cannot open /dev/net/tun: %s (tun module loaded? root?)", strerror(errno));
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, tun_name, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    if (ioctl(tun, TUNSETIFF, &ifr) < 0) {
        int err = errno;
        die("cannot create TUN device '%s': %s%s", tun_name, strerror(err),
            err == EBUSY || err == EEXIST || err == EINVAL ? " (a device of that name already exists in this namespace?)"
                                                            : "");
    }
    if (about_echo) {
        char path[128];
        FILE *f;
        snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/accept_local", tun_name);
        f = fopen(path, "w");
        if (!f || fputs("1\n", f) < 0 || fclose(f) != 0)
            die("--ping-unreachable: cannot set %s: %s", path, strerror(errno));
    }
    if (txqueuelen > 0) {
        int ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        memset(&ifr, 0, sizeof(ifr));
        strncpy(ifr.ifr_name, tun_name, IFNAMSIZ - 1);
        ifr.ifr_qlen = txqueuelen;
        if (ctl < 0 || ioctl(ctl, SIOCSIFTXQLEN, &ifr) < 0)
            die("cannot set the TUN queue length to %d: %s", txqueuelen, strerror(errno));
        close(ctl);
    }
    if (fcntl(tun, F_SETFL, O_NONBLOCK) < 0)
        die("cannot make the TUN non-blocking: %s", strerror(errno));
    return tun;
}

static int open_socket(const struct sockaddr_in *listen_at, int sock_buf)
{
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        die("cannot create the UDP socket: %s", strerror(errno));
    if (sock_buf > 0 && (setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &sock_buf, sizeof(sock_buf)) < 0 ||
                         setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &sock_buf, sizeof(sock_buf)) < 0)) {
        setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &sock_buf, sizeof(sock_buf));
        setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &sock_buf, sizeof(sock_buf));
    }
    if (bind(sock, (const struct sockaddr *)listen_at, sizeof(*listen_at)) < 0)
        die("cannot bind UDP %s:%d: %s", inet_ntoa(listen_at->sin_addr), ntohs(listen_at->sin_port), strerror(errno));
    return sock;
}

int main(int argc, char **argv)
{
    struct sockaddr_in listen_at;
    const char *listen_text = NULL, *ready_file = NULL;
    int sock_buf = 0, txqueuelen = 0, tun, sock, a;
    struct sigaction sa;
    struct pollfd fds[2];
    static uint8_t buf[BUF_SIZE];

    for (a = 1; a < argc; a++) {
        const char *opt = argv[a];
        if (!strcmp(opt, "-v")) {
            verbose = 1;
        } else if (!strcmp(opt, "--ping-unreachable")) {
            about_echo = 1;
        } else if (a + 1 == argc) {
            die("%s needs a value", opt);
        } else if (!strcmp(opt, "--tun")) {
            tun_name = argv[++a];
        } else if (!strcmp(opt, "--listen")) {
            listen_text = argv[++a];
        } else if (!strcmp(opt, "--route")) {
            parse_route(argv[++a]);
        } else if (!strcmp(opt, "--sock-buf")) {
            sock_buf = atoi(argv[++a]);
        } else if (!strcmp(opt, "--txqueuelen")) {
            txqueuelen = atoi(argv[++a]);
        } else if (!strcmp(opt, "--ready-file")) {
            ready_file = argv[++a];
        } else if (!strcmp(opt, "--tun-ip")) {
            struct in_addr ip;
            if (inet_pton(AF_INET, argv[++a], &ip) != 1)
                die("bad --tun-ip %s", argv[a]);
            tun_ip = ip.s_addr;
        } else {
            die("unknown argument %s", opt);
        }
    }
    if (!listen_text || !*tun_name || strlen(tun_name) >= IFNAMSIZ)
        die("need --listen IP:PORT and --tun NAME (1 to 15 bytes)");
    parse_endpoint(listen_text, &listen_at);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() and a blocked sendto() return EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    tun = open_tun(txqueuelen);
    sock = open_socket(&listen_at, sock_buf);
    if (ready_file) {
        FILE *f = fopen(ready_file, "w");
        if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0)
            die("cannot signal readiness: %s: %s", ready_file, strerror(errno));
    }
    if (printf("READY\n") < 0 || fflush(stdout) != 0)
        die("cannot signal readiness: %s", strerror(errno));

    fds[0].fd = tun;
    fds[0].events = POLLIN;
    fds[1].fd = sock;
    fds[1].events = POLLIN;
    while (!stop_signal) {
        int busy;
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll failed: %s", strerror(errno));
        }
        count.waits++;
        do {
            busy = tun_to_udp(tun, sock, buf);
            busy |= udp_to_tun(sock, tun, buf);
        } while (busy && !stop_signal);
    }
    close(sock);
    close(tun);
    if (verbose)
        fprintf(stderr, PROG ": exiting: %llu packets sent, %llu received, %llu unreachable, %llu dropped, "
                        "%llu TUN reads, %llu UDP reads, %llu TUN writes, %llu UDP sends, %llu waits\n",
                count.sent, count.received, count.unreachable, count.dropped, count.tun_reads, count.udp_reads,
                count.tun_writes, count.udp_sends, count.waits);
    return 0;
}
