with

source as (

    select * from {{ source('sis', 'roster_communities') }}

),

final as (

    select
        line_number,
        upper({{ clean_text('column_name') }}) as column_name,
        raw_value as cell_value

    from source

)

select * from final
