# Scenario 2: clones of a LUN taken while the guest's ext4 on it is mounted and being written.
# The guest writes and syncs a first set of files, then keeps writing in the background (256 KiB
# files, every other one fsync'ed, some unsynced ones deleted again); meanwhile the host takes a
# linked clone (LUN 1) and a full clone (LUN 2, waits for the copy to complete) of the LUN. The
# guest rescans the session, finds both clones with their own NAA identifiers and the origin's
# size, mounts them (a crash-consistent image: ext4 replays its journal), and every file that
# was synced before the host was asked to clone is there with the right content; after umount
# each clone's e2fsck -fn is clean. Writes and deletes on each disk stay on that disk.
# Env: PORTAL IQN
discover
login
dev=$(wait_disk 0 60) || fail disk-appears "no disk for LUN 0 after login"
pass disk-appears
step mkfs mkfs.ext4 -q -F "/dev/$dev"
step mount mount -t ext4 "/dev/$dev" /mnt
step write-files write_files /mnt 8 256
mkdir -p /mnt/bg
step sync sync
: > /tmp/bgsums
# Writer: f<even> fsync'ed (checksum recorded only after the fsync returned), f<odd> left in the
# page cache, and the odd file of two rounds ago deleted (metadata churn in the journal).
(
  i=0
  while [ ! -f /tmp/stop ]; do
    if [ $((i % 2)) = 0 ]; then
      if dd if=/dev/urandom of="/mnt/bg/f$i" bs=64k count=4 conv=fsync 2>>/tmp/writer.err; then
        (cd /mnt && md5sum "bg/f$i") >> /tmp/bgsums
      else
        echo "write bg/f$i failed" >> /tmp/writer.failed
      fi
    else
      dd if=/dev/urandom of="/mnt/bg/f$i" bs=64k count=4 2>>/tmp/writer.err ||
        echo "write bg/f$i failed" >> /tmp/writer.failed
      [ "$i" -lt 3 ] || rm -f "/mnt/bg/f$((i - 2))"
    fi
    i=$((i + 1))
    echo "$i" > /tmp/count
  done
) &
writer=$!
count() { cat /tmp/count 2>/dev/null || echo 0; }
t=0
while [ "$(count)" -lt 6 ]; do
  sleep 1; t=$((t + 1))
  [ "$t" -lt 300 ] || fail writing "writer stuck at $(count) files"
done
pass writing
# Everything fsync'ed up to here was synced before the host got the request to clone.
cp /tmp/bgsums /tmp/bgsums.before
cat /tmp/sums /tmp/bgsums.before > /tmp/synced-before
before=$(count)
say "INFO synced_before_clone $(wc -l < /tmp/synced-before) files (writer at $before)"
wait_for_host cloned
after=$(count)
say "INFO writer_during_clone $before -> $after files"
[ "$after" -gt "$before" ] || fail writing-during-clone "the writer made no progress while the host cloned"
pass writing-during-clone
touch /tmp/stop
wait "$writer"
[ ! -f /tmp/writer.failed ] || fail no-write-errors "$(head -n 10 /tmp/writer.failed /tmp/writer.err | tr '\n' ' ')"
pass no-write-errors
step sync sync
cat /tmp/sums /tmp/bgsums > /tmp/synced-all

step rescan iscsiadm -m session --rescan
linked=$(wait_disk 1 60) || fail clone-appears "no disk for LUN 1 (linked clone) after the rescan"
pass clone-appears
full=$(wait_disk 2 60) || fail full-appears "no disk for LUN 2 (full clone) after the rescan"
pass full-appears
w0=$(cat "/sys/block/$dev/device/wwid")
w1=$(cat "/sys/block/$linked/device/wwid")
w2=$(cat "/sys/block/$full/device/wwid")
say "INFO wwids origin=$w0 linked=$w1 full=$w2"
[ -n "$w1" ] && [ "$w0" != "$w1" ] || fail clone-own-id "origin $w0, linked clone $w1"
pass clone-own-id
[ -n "$w2" ] && [ "$w2" != "$w0" ] && [ "$w2" != "$w1" ] || fail full-own-id "origin $w0, linked $w1, full $w2"
pass full-own-id
size0=$(cat "/sys/block/$dev/size")
[ "$(cat /sys/block/$linked/size)" = "$size0" ] || fail clone-size "linked clone $(cat /sys/block/$linked/size) sectors, origin $size0"
pass clone-size
[ "$(cat /sys/block/$full/size)" = "$size0" ] || fail full-size "full clone $(cat /sys/block/$full/size) sectors, origin $size0"
pass full-size

# verify_sums DIR LIST: every file of the md5sum LIST verifies under DIR.
verify_sums() { (cd "$1" && md5sum -c "$2" >/tmp/verify.out 2>&1) || { grep -v ': OK$' /tmp/verify.out | head -n 20; return 1; }; }

mkdir -p /mnt1 /mnt2
# check_clone NAME DISK DIR: mount (journal replay: the clone is a crash-consistent image of a
# mounted file system), the files synced before the clone verify, write and delete something,
# umount, e2fsck -fn clean.
check_clone() {
  cn=$1; disk=$2; dir=$3  # not n: step() sets n
  step "$cn-mount" mount -t ext4 "/dev/$disk" "$dir"
  replayed=no
  dmesg | grep -q "EXT4-fs ($disk): recovery complete" && replayed=yes
  say "INFO $cn-mount journal_replayed=$replayed: $(dmesg | grep "EXT4-fs ($disk)" | sed 's/^\[[^]]*\] //' | tr '\n' ' ')"
  step "$cn-checksums" verify_sums "$dir" /tmp/synced-before
  say "INFO $cn-files data=$(ls "$dir/data" | wc -l) bg=$(ls "$dir/bg" | wc -l) (origin now bg=$(ls /mnt/bg | wc -l))"
  step "$cn-write" dd if=/dev/urandom of="$dir/only-in-$cn" bs=64k count=16 conv=fsync
  step "$cn-rm" rm "$dir/data/f1"
  step "$cn-umount" umount "$dir"
  step "$cn-e2fsck" e2fsck -fn "/dev/$disk"
}
check_clone clone "$linked" /mnt1
check_clone full "$full" /mnt2
# The origin, still mounted, has everything that was fsync'ed (before, during and after).
step origin-checksums verify_sums /mnt /tmp/synced-all
step write-origin dd if=/dev/urandom of=/mnt/only-in-origin bs=64k count=16 conv=fsync
step umount-origin umount /mnt
drop_caches
step remount-all sh -c "mount -t ext4 /dev/$dev /mnt && mount -t ext4 /dev/$linked /mnt1 && mount -t ext4 /dev/$full /mnt2"
for d in /mnt /mnt1 /mnt2; do
  for n in origin clone full; do
    f=$d/only-in-$n
    case "$d:$n" in
      /mnt:origin|/mnt1:clone|/mnt2:full) [ -f "$f" ] || fail isolated "$f missing" ;;
      *) [ ! -e "$f" ] || fail isolated "$f visible on another disk" ;;
    esac
  done
done
[ -f /mnt/data/f1 ] || fail isolated "a delete in a clone removed the origin's file"
[ -f /mnt1/data/f1 ] && fail isolated "the delete in the linked clone did not stay"
[ -f /mnt2/data/f1 ] && fail isolated "the delete in the full clone did not stay"
pass isolated
step origin-still-verifies verify_sums /mnt /tmp/synced-all
grep -v ' data/f1$' /tmp/synced-before > /tmp/synced-before-but-f1
step clone-still-verifies verify_sums /mnt1 /tmp/synced-before-but-f1
step full-still-verifies verify_sums /mnt2 /tmp/synced-before-but-f1
step umount-all umount /mnt /mnt1 /mnt2
step e2fsck-origin e2fsck -fn "/dev/$dev"
step e2fsck-clone e2fsck -fn "/dev/$linked"
step e2fsck-full e2fsck -fn "/dev/$full"
errs=$(kernel_errors)
[ -z "$errs" ] || fail no-kernel-errors "$errs"
pass no-kernel-errors
logout
