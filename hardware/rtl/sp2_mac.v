// Sum-of-two-powers-of-two (SP2) multiply-accumulate: two shifts and an add.
//
// weight = {sign, c1, c2} with c1 of M1 bits and c2 of M2 bits (M1 + M2 = k - 1,
// M1 >= M2; mixq.grids.sp2_term_bits). With J = 2^M1 - 1 the magnitude is the integer
// q1 + q2 over the denominator 2^J, where q1 = 2^(J - c1) for c1 >= 1 (0 for c1 = 0)
// and q2 = 2^(J - c2) for c2 >= 1 (0 for c2 = 0): SPEC section 1's
// q1 in {0} U {2^-j : j = 1 .. 2^M1 - 1}, q2 in {0} U {2^-j : j = 1 .. 2^M2 - 1},
// scaled by 2^J.
module sp2_mac #(
    parameter integer A_BITS = 4,
    parameter integer W_BITS = 4,
    parameter integer M2 = 1,
    parameter integer ACC_BITS = 21
) (
    input  wire                       clk,
    input  wire                       clear,
    input  wire                       en,
    input  wire        [A_BITS-1:0]   act,
    input  wire        [W_BITS-1:0]   weight,
    output reg  signed [ACC_BITS-1:0] acc
);
    localparam integer M1 = W_BITS - 1 - M2;
    localparam integer J = (1 << M1) - 1;
    localparam integer TERM_BITS = A_BITS + J;

    wire          negative = weight[W_BITS-1];
    wire [M1-1:0] c1 = weight[M1+M2-1:M2];
    wire [M2-1:0] c2 = weight[M2-1:0];
    wire [TERM_BITS-1:0] act_wide = {{J{1'b0}}, act};
    wire [TERM_BITS-1:0] q1_term = (c1 == 0) ? {TERM_BITS{1'b0}} : act_wide << (J - c1);
    wire [TERM_BITS-1:0] q2_term = (c2 == 0) ? {TERM_BITS{1'b0}} : act_wide << (J - c2);
    wire [TERM_BITS:0]   magnitude = q1_term + q2_term;
    wire signed [ACC_BITS-1:0] addend = {{(ACC_BITS - TERM_BITS - 1){1'b0}}, magnitude};

    // Subtracting is adding the complement plus one: one carry chain does both.
    wire signed [ACC_BITS-1:0] flipped = addend ^ {ACC_BITS{negative}};

    initial acc = 0;
    always @(posedge clk) begin
        if (clear)
            acc <= 0;
        else if (en)
            acc <= acc + flipped + negative;
    end
endmodule
