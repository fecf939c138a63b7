#!/bin/bash
# Disk benchmark of the whole stack: volume (file:// store) -> FUSE -> loop -> ext4.
# usage: bench-disk.sh SERVE_BIN WORKDIR CHUNK_SIZE|plain LOOP_DIO(on|off) [FUSE_DIO(1|0)]
# Prints one line: chunk dio seq_write_MBps seq_read_MBps randwrite_fsync_iops untar_s rss_idle_kB
set -euo pipefail
serve=$1 work=$2 chunk=$3 dio=$4 fdio=${5:-1}
size=$((4 << 30))
rm -rf "$work"; mkdir -p "$work"/{state,store,fuse,mnt}
[ -f /dev/shm/bench-rand ] || head -c $((1 << 30)) /dev/urandom > /dev/shm/bench-rand
[ -f /dev/shm/bench-small.tar ] || tar cf /dev/shm/bench-small.tar -C /usr include
dev="" pid="" rss=0
cleanup() {
    mountpoint -q "$work/mnt" && umount "$work/mnt"
    [ -n "$dev" ] && losetup -d "$dev"
    if [ -n "$pid" ]; then exec 3>&-; wait "$pid" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
if [ "$chunk" = plain ]; then
    truncate -s $size "$work/plain.img"; file="$work/plain.img"
else
    exec 3> >("$serve" "$work/state" "$work/store" "$work/fuse" $size "$chunk" "$fdio" > "$work/serve.out")
    pid=$!
    until grep -q ready "$work/serve.out" 2>/dev/null; do sleep 0.05; done
    file="$work/fuse/disk"
    spid=$(pgrep -f "$work/state $work/store" | head -1)
    rss=$(ps -o rss= -p "$spid" | tr -d ' ')
fi
dev=$(losetup --find --show --direct-io="$dio" "$file")
mkfs.ext4 -q -F "$dev"
mount "$dev" "$work/mnt"
now() { date +%s.%N; }
t0=$(now); dd if=/dev/shm/bench-rand of="$work/mnt/big" bs=1M conv=fsync status=none; t1=$(now)
w=$(echo "1024 / ($t1 - $t0)" | bc -l)
sync; echo 3 > /proc/sys/vm/drop_caches
t0=$(now); dd if="$work/mnt/big" of=/dev/null bs=1M status=none; t1=$(now)
r=$(echo "1024 / ($t1 - $t0)" | bc -l)
rm "$work/mnt/big"
iops=$(fio --name=rw --filename="$work/mnt/fio" --size=128M --rw=randwrite --bs=4k --fsync=1 \
    --runtime=10 --time_based --ioengine=psync --output-format=json 2>/dev/null \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["iops"]))')
rm "$work/mnt/fio"
mkdir "$work/mnt/x"
t0=$(now); tar xf /dev/shm/bench-small.tar -C "$work/mnt/x"; sync -f "$work/mnt/x"; t1=$(now)
u=$(echo "$t1 - $t0" | bc -l)
printf "%s %s %.0f %.0f %s %.2f %s\n" "$chunk" "$dio" "$w" "$r" "$iops" "$u" "$rss"
