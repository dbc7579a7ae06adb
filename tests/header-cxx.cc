// The public header, used from C++: linkage and types must work as in C.
#include <ioflusher.h>

int main()
{
	struct ioflusher_ctx *ctx = nullptr;
	if (ioflusher_ctx_new(&ctx) < 0)
		return 1;
	ioflusher_ctx_set_policy(ctx, IOFLUSHER_PROTECT_FLAG,
				 IOFLUSHER_POLICY_BEST_EFFORT);
	ioflusher_ctx_unref(ctx);
	return ioflusher_flag_get() < 0;
}
