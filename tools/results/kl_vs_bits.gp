set terminal pngcairo size 1000,650 font ',10'
set output 'kl_vs_bits.png'
set title 'SmolLM2-135M-Instruct: next-token KL divergence vs dense fp32 cache'
set xlabel 'bits per KV element (memory\_bytes)'
set ylabel 'mean KL (nats/token)'
set logscale y
set format y '10^{%L}'
set grid
set key top right
plot for [i=0:1] 'kl_vs_bits.dat' index i using 1:2 with points pt 7 ps 1.4 title columnheader(1), \
     for [i=0:1] 'kl_vs_bits.dat' index i using 1:2:3 with labels left offset 0.8,0.3 font ',8' noenhanced notitle
