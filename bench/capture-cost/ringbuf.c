// Experiment only: attaches ringbuf.bpf.o to the egress of argv[1] and consumes the ring
// every millisecond until SIGTERM, then prints how many records it read.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static long records;

static int count(void *ctx, void *data, size_t len)
{
	records++;
	return 0;
}

static void on_signal(int sig)
{
	stop = 1;
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;

	libbpf_set_print(NULL);
	obj = bpf_object__open_file(argc > 2 ? argv[2] : "ringbuf.bpf.o", NULL);

	if (argc < 2 || !obj || bpf_object__load(obj))
		return 1;
	DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = if_nametoindex(argv[1]), .attach_point = BPF_TC_EGRESS);
	DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "cap")));
	bpf_tc_hook_create(&hook);
	if (bpf_tc_attach(&hook, &opts))
		return 2;
	struct ring_buffer *rb = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "rb")), count, NULL, NULL);

	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	while (!stop) {
		ring_buffer__consume(rb);
		usleep(1000);
	}
	fprintf(stderr, "records %ld\n", records);
	bpf_tc_detach(&hook, &opts);
	return 0;
}
