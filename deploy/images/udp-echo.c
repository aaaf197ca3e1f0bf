/* udp-echo: answers every UDP datagram on PORT with "HOSTNAME: DATA".
 * Built statically into the test image (deploy/build-image.sh), because
 * Debian's static busybox has no UDP server. Usage: udp-echo PORT */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: udp-echo PORT\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        perror("udp-echo");
        return 1;
    }
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    for (;;) {
        char in[512], out[1024];
        struct sockaddr_in peer;
        socklen_t length = sizeof peer;
        ssize_t n = recvfrom(fd, in, sizeof in - 1, 0, (struct sockaddr *)&peer, &length);
        if (n < 0) continue;
        in[n] = 0;
        int m = snprintf(out, sizeof out, "%s: %s", host, in);
        sendto(fd, out, m, 0, (struct sockaddr *)&peer, length);
    }
}
