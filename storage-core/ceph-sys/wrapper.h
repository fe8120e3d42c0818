/* The C APIs lunar-ceph-sys binds: librados and librbd from Debian 12 (Ceph 16.2.15). */
#include <rados/librados.h>
#include <rbd/librbd.h>
