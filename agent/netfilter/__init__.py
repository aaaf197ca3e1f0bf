"""Service networking on a host: virtual IPs and load-balancer ports in nftables or iptables.

`nft_rules` and `rules` build the whole rule set in memory (pure, pinned by
golden tests); `nftables` applies it in one `nft -f` transaction per change,
owning only `table ip berth`; `iptables` (the fallback) applies it with
iptables-restore, owning only Berth's chains; `sync` is the loop and conntrack
clean-up they share; `backend` chooses between them (--netfilter); `runner` is
the seam through which they run host programs (real, or a fake in tests).
"""
