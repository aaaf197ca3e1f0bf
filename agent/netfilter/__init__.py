"""Service networking on a host: virtual IPs and load-balancer ports in iptables.

`rules` builds the whole rule set in memory (pure, pinned by golden tests);
`iptables` applies it atomically and owns only Berth's chains; `runner` is
the seam through which it runs host programs (real, or a fake in tests).
"""
