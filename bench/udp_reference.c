/*
 * udp_reference.c: the reference the udp backend is measured against (bench/udp_daemon.py, bench/baseline.sh).
 *
 * A forwarder with the structure of flannel's backend/udp/proxy.c, written for this project (no flannel code):
 *   - one thread, poll() over the TUN device and the UDP socket;
 *   - once either is readable, alternate "one read from the TUN, one recv from the socket" until both come back
 *     empty (EAGAIN), bypassing poll() while there is traffic, as proxy.c's run_proxy does;
 *   - TUN -> UDP: read one IP packet, find the node owning its destination (a linear scan that moves the hit to
 *     the front), no node -> ICMP net unreachable written back into the TUN (never about ICMP or non-first
 *     fragments), TTL - 1 (drop at 0), one sendto() of the bare packet;
 *   - UDP -> TUN: recv one datagram (MSG_DONTWAIT), TTL - 1 (drop at 0), one write() into the TUN;
 *   - a buffer of the TUN's MTU, the TUN non-blocking, the socket blocking for sends, kernel default socket
 *     buffers and TUN queue length (flanneld sets neither).
 * Routes come from the command line instead of flanneld's control socket.
 *
 *   udp_reference --tun flannel0 --listen 192.168.56.11:8285 --route 10.244.2.0/24=192.168.56.12[:PORT]
 *                 [--mtu 1472] [--sock-buf BYTES] [--ready-file PATH] [--tun-ip IP] [-v]
 *
 * It creates the TUN device (IFF_TUN | IFF_NO_PI), binds the socket, prints READY and writes PATH; addresses,
 * MTU, link state and routes are set by the caller with `ip`, as for emu's daemon. SIGTERM/SIGINT: print the
 * counters to stderr and exit 0. Build: cc -O2 -o udp_reference udp_reference.c
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

#define MAX_NODES 256
#define IP_HDR_MIN 20
#define IP_OPT_MAX 40

struct node_route {
    uint32_t net;  /* network byte order */
    uint32_t mask; /* network byte order */
    struct sockaddr_in peer;
};

static struct node_route routes[MAX_NODES];
static size_t route_count;
static uint32_t tun_address; /* network byte order; 0 = read from the device when first needed */
static const char *tun_name = "flannel0";
static int verbose;
static volatile sig_atomic_t stopping;

static unsigned long long sent_count, received_count, unreachable_count, dropped_count;

static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void complain(const char *fmt, ...)
{
    va_list ap;
    if (!verbose)
        return;
    va_start(ap, fmt);
    fputs("udp_reference: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

static void fail(const char *what)
{
    fprintf(stderr, "udp_reference: error: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(const char *why)
{
    fprintf(stderr, "udp_reference: %s\nusage: udp_reference --tun NAME --listen IP[:PORT] "
                    "--route SUBNET/LEN=IP[:PORT]... [--mtu N] [--sock-buf BYTES] [--ready-file PATH] [--tun-ip IP] [-v]\n", why);
    exit(2);
}

/* ones'-complement sum of 16-bit big-endian words, folded and inverted (RFC 1071) */
static uint16_t internet_checksum(const uint8_t *data, size_t len)
{
    uint32_t sum = 0;
    size_t i;
    for (i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)data[i] << 8 | data[i + 1];
    if (len & 1)
        sum += (uint32_t)data[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

/* TTL - 1 with the checksum patched incrementally (RFC 1624 eqn. 3); 0 when the packet must be dropped */
static int lower_ttl(uint8_t *ip)
{
    uint32_t sum;
    if (ip[8] <= 1)
        return 0;
    ip[8]--;
    /* the TTL is the high byte of header word 4: the word went down by 0x0100, so add ~0x0100 to ~HC */
    sum = (uint32_t)(uint16_t)~((ip[10] << 8) | ip[11]) + 0xFEFF;
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (uint16_t)~sum;
    ip[10] = sum >> 8;
    ip[11] = sum & 0xFF;
    return 1;
}

static struct sockaddr_in *route_to(uint32_t dst)
{
    size_t i;
    for (i = 0; i < route_count; i++) {
        if ((dst & routes[i].mask) == routes[i].net) {
            if (i) { /* bursts go to one node: keep the last hit first */
                struct node_route hit = routes[i];
                routes[i] = routes[0];
                routes[0] = hit;
            }
            return &routes[0].peer;
        }
    }
    return NULL;
}

static uint32_t device_address(int sock)
{
    struct ifreq ifr;
    if (tun_address)
        return tun_address;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, tun_name, IFNAMSIZ - 1);
    ifr.ifr_addr.sa_family = AF_INET;
    if (ioctl(sock, SIOCGIFADDR, &ifr) == 0)
        tun_address = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr;
    return tun_address;
}

/* ICMP destination (net) unreachable about `bad`, from the TUN's address, written into the TUN */
static void answer_unreachable(int tun, int sock, const uint8_t *bad, size_t len)
{
    uint8_t reply[IP_HDR_MIN + 8 + IP_HDR_MIN + IP_OPT_MAX + 8];
    size_t hlen = (size_t)(bad[0] & 0x0F) * 4, quote, total;
    uint32_t src = device_address(sock);
    uint16_t check;

    if (hlen < IP_HDR_MIN || hlen >= IP_HDR_MIN + IP_OPT_MAX || bad[9] == IPPROTO_ICMP)
        return; /* malformed, or about ICMP (RFC 792: no errors about errors; proxy.c: about no ICMP at all) */
    if (((bad[6] << 8) | bad[7]) & 0x1FFF)
        return; /* only the first fragment gets an error */
    if (!src) {
        complain("no TUN address yet: no ICMP net unreachable\n");
        return;
    }
    quote = hlen + 8;
    total = IP_HDR_MIN + 8 + quote;
    memset(reply, 0, sizeof(reply));
    memcpy(reply + IP_HDR_MIN + 8, bad, quote <= len ? quote : len);
    reply[IP_HDR_MIN] = 3;     /* destination unreachable */
    reply[IP_HDR_MIN + 1] = 0; /* net unreachable */
    check = internet_checksum(reply + IP_HDR_MIN, 8 + quote);
    reply[IP_HDR_MIN + 2] = check >> 8;
    reply[IP_HDR_MIN + 3] = check & 0xFF;
    reply[0] = 0x45;
    reply[2] = total >> 8;
    reply[3] = total & 0xFF;
    reply[8] = 8; /* TTL, as proxy.c */
    reply[9] = IPPROTO_ICMP;
    memcpy(reply + 12, &src, 4);
    memcpy(reply + 16, bad + 12, 4);
    check = internet_checksum(reply, IP_HDR_MIN);
    reply[10] = check >> 8;
    reply[11] = check & 0xFF;
    if (write(tun, reply, total) != (ssize_t)total)
        complain("ICMP net unreachable not written: %s\n", strerror(errno));
    else
        unreachable_count++;
}

/* one packet TUN -> UDP; 0 when the TUN had nothing to read */
static int tun_to_udp(int tun, int sock, uint8_t *buf, size_t size)
{
    struct sockaddr_in *peer;
    ssize_t n = read(tun, buf, size);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            complain("TUN read: %s\n", strerror(errno));
        return 0;
    }
    if (n < IP_HDR_MIN || buf[0] >> 4 != 4) {
        dropped_count++;
        return 1;
    }
    peer = route_to(*(uint32_t *)(buf + 16));
    if (!peer) {
        answer_unreachable(tun, sock, buf, (size_t)n);
        return 1;
    }
    if (!lower_ttl(buf)) {
        dropped_count++;
        return 1;
    }
    if (sendto(sock, buf, (size_t)n, 0, (struct sockaddr *)peer, sizeof(*peer)) != n)
        complain("UDP send to %s: %s\n", inet_ntoa(peer->sin_addr), strerror(errno));
    else
        sent_count++;
    return 1;
}

/* one datagram UDP -> TUN; 0 when the socket had nothing to read */
static int udp_to_tun(int sock, int tun, uint8_t *buf, size_t size)
{
    ssize_t n = recv(sock, buf, size, MSG_DONTWAIT);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            complain("UDP recv: %s\n", strerror(errno));
        return 0;
    }
    if (n < IP_HDR_MIN || !lower_ttl(buf)) {
        dropped_count++;
        return 1;
    }
    while (write(tun, buf, (size_t)n) < 0) {
        if (errno != EAGAIN) {
            complain("TUN write: %s\n", strerror(errno));
            return 1;
        }
    }
    received_count++;
    return 1;
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void parse_endpoint(const char *text, struct sockaddr_in *out, int default_port)
{
    char host[64];
    const char *colon = strchr(text, ':');
    size_t len = colon ? (size_t)(colon - text) : strlen(text);
    long port = default_port;
    if (len >= sizeof(host))
        usage("bad address");
    memcpy(host, text, len);
    host[len] = 0;
    if (colon) {
        char *end;
        port = strtol(colon + 1, &end, 10);
        if (*end || port <= 0 || port > 65535)
            usage("bad port");
    }
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
        usage("bad IPv4 address");
}

static void add_route(const char *text, int default_port)
{
    char net[64], *slash, *end;
    const char *eq = strchr(text, '=');
    long len;
    struct in_addr addr;
    if (!eq || (size_t)(eq - text) >= sizeof(net) || route_count == MAX_NODES)
        usage("bad --route (SUBNET/LEN=IP[:PORT])");
    memcpy(net, text, (size_t)(eq - text));
    net[eq - text] = 0;
    slash = strchr(net, '/');
    if (!slash)
        usage("bad --route subnet");
    *slash = 0;
    len = strtol(slash + 1, &end, 10);
    if (*end || len < 0 || len > 32 || inet_pton(AF_INET, net, &addr) != 1)
        usage("bad --route subnet");
    routes[route_count].mask = len ? htonl(~(uint32_t)0 << (32 - len)) : 0;
    routes[route_count].net = addr.s_addr & routes[route_count].mask;
    parse_endpoint(eq + 1, &routes[route_count].peer, default_port);
    route_count++;
}

int main(int argc, char **argv)
{
    struct sockaddr_in listen_at;
    const char *listen_text = NULL, *ready_file = NULL;
    const char *route_text[MAX_NODES];
    size_t route_args = 0, i, mtu = 1472;
    long sock_buf = 0;
    struct ifreq ifr;
    struct sigaction sa;
    struct pollfd fds[2];
    uint8_t *buf;
    int tun, sock, a;

    for (a = 1; a < argc; a++) {
        const char *opt = argv[a];
        if (!strcmp(opt, "-v")) {
            verbose = 1;
            continue;
        }
        if (a + 1 >= argc)
            usage("missing value");
        if (!strcmp(opt, "--tun"))
            tun_name = argv[++a];
        else if (!strcmp(opt, "--listen"))
            listen_text = argv[++a];
        else if (!strcmp(opt, "--route") && route_args < MAX_NODES)
            route_text[route_args++] = argv[++a];
        else if (!strcmp(opt, "--mtu"))
            mtu = (size_t)strtoul(argv[++a], NULL, 10);
        else if (!strcmp(opt, "--sock-buf"))
            sock_buf = strtol(argv[++a], NULL, 10);
        else if (!strcmp(opt, "--ready-file"))
            ready_file = argv[++a];
        else if (!strcmp(opt, "--tun-ip")) {
            struct in_addr ip;
            if (inet_pton(AF_INET, argv[++a], &ip) != 1)
                usage("bad --tun-ip");
            tun_address = ip.s_addr;
        } else
            usage("unknown option");
    }
    if (!listen_text || strlen(tun_name) >= IFNAMSIZ || mtu < 68 || mtu > 65535)
        usage("need --listen, a TUN name under 16 bytes, --mtu 68..65535");
    parse_endpoint(listen_text, &listen_at, 8285);
    for (i = 0; i < route_args; i++)
        add_route(route_text[i], ntohs(listen_at.sin_port));

    tun = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (tun < 0)
        fail("open /dev/net/tun");
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, tun_name, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    if (ioctl(tun, TUNSETIFF, &ifr) < 0)
        fail("create the TUN device");
    if (fcntl(tun, F_SETFL, O_NONBLOCK) < 0)
        fail("make the TUN non-blocking");
    sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        fail("socket");
    if (sock_buf > 0) {
        int size = (int)sock_buf;
        if (setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0 ||
            setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0)
            fail("set the socket buffers");
    }
    if (bind(sock, (struct sockaddr *)&listen_at, sizeof(listen_at)) < 0)
        fail("bind the UDP socket");
    buf = malloc(mtu);
    if (!buf)
        fail("malloc");

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (ready_file) {
        FILE *f = fopen(ready_file, "w");
        if (!f)
            fail("write the ready file");
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    printf("READY\n");
    fflush(stdout);

    fds[0].fd = tun;
    fds[0].events = POLLIN;
    fds[1].fd = sock;
    fds[1].events = POLLIN;
    while (!stopping) {
        int busy;
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            fail("poll");
        }
        do {
            busy = tun_to_udp(tun, sock, buf, mtu);
            busy += udp_to_tun(sock, tun, buf, mtu);
        } while (busy && !stopping);
    }
    fprintf(stderr, "udp_reference: exiting: %llu packets sent, %llu received, %llu unreachable, %llu dropped\n",
            sent_count, received_count, unreachable_count, dropped_count);
    close(sock);
    close(tun);
    free(buf);
    return 0;
}
